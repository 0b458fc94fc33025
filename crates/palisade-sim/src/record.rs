//! What happened in a run: every request the traffic sent and every attempt that reached an
//! upstream replica.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::Duration;

use palisade::classify::{BoxError, Category, class_of};
use tokio::time::Instant;
use tower::Service;

use crate::{Reply, Req};

/// One request the traffic sent.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RequestRecord {
    /// When it was due, since the run's start: the open loop's schedule (`id / rate`), which
    /// tokio's millisecond timer may send up to a millisecond late; in the closed loop, when it
    /// was sent. Every measured request is due within the run, so it falls in one of the run's
    /// seconds even when the timer sends it at the run's very end.
    pub sent: Duration,
    /// How long until the caller had its answer or gave up, from when it was sent.
    pub latency: Duration,
    /// Whether the caller got a real answer from the upstream.
    pub ok: bool,
    /// How many attempts it sent to the upstream.
    pub attempts: u32,
    /// Whether the caller had to give up at its deadline: the stack had not answered by then.
    pub cut_off: bool,
    /// The category of the error the stack returned (`None`: answered, or cut off).
    pub error: Option<Category>,
}

/// What became of an attempt.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AttemptOutcome {
    /// It never finished: the stack or the caller dropped it (a timeout, a deadline).
    Dropped,
    /// The upstream answered.
    Ok,
    /// The upstream failed it.
    Failed(Category),
}

/// One attempt that reached an upstream replica.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AttemptRecord {
    /// When it was sent, since the run's start.
    pub at: Duration,
    /// Which replica got it.
    pub replica: u16,
    /// The request it belongs to.
    pub req: u64,
    /// What became of it.
    pub outcome: AttemptOutcome,
}

/// Everything recorded in one run.
#[derive(Debug, Default)]
pub struct Log {
    /// The requests, indexed by id.
    pub requests: Vec<RequestRecord>,
    /// The attempts, in the order they were sent.
    pub attempts: Vec<AttemptRecord>,
    /// Retries that reached the upstream before the server's retry hint allowed them.
    pub early_retries: u64,
    /// For each retry that followed a failure with a server's hint: how long after that
    /// failure it reached the upstream, and the hint.
    pub hinted_waits: Vec<(Duration, Duration)>,
    per_request: Vec<u32>,
    /// Per request: when its last attempt failed with a hint, and the hint.
    hinted: HashMap<u64, (Instant, Duration)>,
}

/// The shared recorder of one run.
#[derive(Clone, Debug)]
pub struct Recorder {
    epoch: Instant,
    /// Requests from this number on are unmeasured trailing traffic.
    measured: u64,
    log: Arc<Mutex<Log>>,
}

impl Recorder {
    /// A recorder for `requests` measured requests (numbered from 0) followed by `trailing`
    /// unmeasured ones, its clock starting at `epoch`.
    pub fn new(epoch: Instant, requests: usize, trailing: usize) -> Self {
        let log = Log {
            requests: Vec::with_capacity(requests),
            per_request: vec![0; requests + trailing],
            ..Log::default()
        };
        Recorder {
            epoch,
            measured: requests as u64,
            log: Arc::new(Mutex::new(log)),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Log> {
        // A panic while recording is a bug of the simulator; the log is still readable.
        self.log.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Records a finished request (trailing ones are not recorded), due at `due` and sent at
    /// `sent`, with what its caller got: `None` where it gave up at its deadline first.
    pub fn request(
        &self,
        id: u64,
        due: Instant,
        sent: Instant,
        answer: Option<&Result<Reply, BoxError>>,
    ) {
        if id >= self.measured {
            return;
        }
        let now = Instant::now();
        let mut log = self.lock();
        let attempts = log.per_request.get(id as usize).copied().unwrap_or(0);
        log.requests.push(RequestRecord {
            sent: due - self.epoch,
            latency: now - sent,
            ok: matches!(answer, Some(Ok(_))),
            attempts,
            cut_off: answer.is_none(),
            error: match answer {
                Some(Err(e)) => Some(class_of(e).category),
                _ => None,
            },
        });
    }

    /// Wraps replica number `replica` so that every attempt it gets is recorded.
    pub fn replica<S>(&self, replica: usize, inner: S) -> Recorded<S> {
        Recorded {
            inner,
            replica: replica as u16,
            recorder: self.clone(),
        }
    }

    /// Takes the log out once the run is over.
    pub fn finish(self) -> Log {
        let mut log = std::mem::take(&mut *self.lock());
        log.requests.sort_by_key(|r| r.sent);
        log
    }

    fn attempt(&self, req: u64, replica: u16) -> usize {
        let now = Instant::now();
        let mut log = self.lock();
        if let Some(n) = log.per_request.get_mut(req as usize) {
            *n += 1;
        }
        if let Some((failed, hint)) = log.hinted.remove(&req)
            && req < self.measured
        {
            if now < failed + hint {
                log.early_retries += 1;
            }
            log.hinted_waits.push((now - failed, hint));
        }
        log.attempts.push(AttemptRecord {
            at: now - self.epoch,
            replica,
            req,
            outcome: AttemptOutcome::Dropped,
        });
        log.attempts.len() - 1
    }

    fn outcome(&self, index: usize, req: u64, result: &Result<Reply, BoxError>) {
        let now = Instant::now();
        let mut log = self.lock();
        let outcome = match result {
            Ok(_) => AttemptOutcome::Ok,
            Err(e) => {
                let class = class_of(e);
                if let Some(after) = class.retry_after {
                    log.hinted.insert(req, (now, after));
                }
                AttemptOutcome::Failed(class.category)
            }
        };
        log.attempts[index].outcome = outcome;
    }
}

/// A replica whose attempts are recorded.
#[derive(Clone, Debug)]
pub struct Recorded<S> {
    inner: S,
    replica: u16,
    recorder: Recorder,
}

impl<S> Service<Req> for Recorded<S>
where
    S: Service<Req, Response = Reply, Error = BoxError>,
    S::Future: Send + 'static,
{
    type Response = Reply;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Reply, BoxError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Req) -> Self::Future {
        let index = self.recorder.attempt(req.id, self.replica);
        let recorder = self.recorder.clone();
        let id = req.id;
        let fut = self.inner.call(req);
        Box::pin(async move {
            let result = fut.await;
            recorder.outcome(index, id, &result);
            result
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use palisade::chaos::error::Injected;
    use palisade::classify::Class;
    use tokio::time::{advance, sleep};
    use tower::{ServiceExt, service_fn};

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    /// A replica that answers after 10 ms; request `id` fails as `fail(id)` says.
    fn replica(
        fail: fn(u64) -> Option<Class>,
    ) -> impl Service<Req, Response = Reply, Error = BoxError, Future: Send + 'static> + Clone {
        service_fn(move |req: Req| async move {
            sleep(ms(10)).await;
            match fail(req.id) {
                Some(class) => Err::<Reply, BoxError>(Box::new(Injected::new(class))),
                None => Ok(Reply),
            }
        })
    }

    async fn attempt<S>(svc: &mut S, id: u64) -> Result<Reply, BoxError>
    where
        S: Service<Req, Response = Reply, Error = BoxError>,
    {
        svc.ready().await?.call(Req { id }).await
    }

    #[tokio::test(start_paused = true)]
    async fn requests_are_recorded_with_their_attempts_sorted_by_sending() {
        advance(ms(1_000)).await;
        let epoch = Instant::now();
        // Three measured requests, then one trailing.
        let recorder = Recorder::new(epoch, 3, 1);
        let mut upstream = recorder.replica(3, replica(|_| None));

        advance(ms(100)).await;
        let sent1 = Instant::now();
        attempt(&mut upstream, 1).await.unwrap();
        attempt(&mut upstream, 1).await.unwrap();
        advance(ms(5)).await;
        recorder.request(1, sent1, sent1, Some(&Ok(Reply)));
        // Sent earlier, finished later, cut off, never attempted.
        recorder.request(0, epoch + ms(50), epoch + ms(50), None);
        // Failed by the stack with a rate limit's error, never attempted.
        let limited: BoxError = Box::new(Injected::new(Class::new(Category::RateLimited)));
        recorder.request(2, epoch + ms(120), epoch + ms(120), Some(&Err(limited)));
        // Trailing: its attempts are recorded, the request is not.
        attempt(&mut upstream, 3).await.unwrap();
        recorder.request(3, epoch + ms(200), epoch + ms(200), Some(&Ok(Reply)));

        let log = recorder.finish();
        assert_eq!(
            log.requests,
            [
                RequestRecord {
                    sent: ms(50),
                    latency: ms(75),
                    ok: false,
                    attempts: 0,
                    cut_off: true,
                    error: None,
                },
                RequestRecord {
                    sent: ms(100),
                    latency: ms(25),
                    ok: true,
                    attempts: 2,
                    cut_off: false,
                    error: None,
                },
                RequestRecord {
                    sent: ms(120),
                    latency: ms(5),
                    ok: false,
                    attempts: 0,
                    cut_off: false,
                    error: Some(Category::RateLimited),
                },
            ]
        );
        let at: Vec<_> = log
            .attempts
            .iter()
            .map(|a| (a.at, a.replica, a.req))
            .collect();
        assert_eq!(at, [(ms(100), 3, 1), (ms(110), 3, 1), (ms(125), 3, 3)]);
        assert!(log.attempts.iter().all(|a| a.outcome == AttemptOutcome::Ok));
    }

    #[tokio::test(start_paused = true)]
    async fn readiness_is_the_replicas() {
        /// Never ready.
        #[derive(Clone)]
        struct Unready;
        impl Service<Req> for Unready {
            type Response = Reply;
            type Error = BoxError;
            type Future = std::future::Ready<Result<Reply, BoxError>>;
            fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
                Poll::Pending
            }
            fn call(&mut self, _: Req) -> Self::Future {
                std::future::ready(Ok(Reply))
            }
        }
        let recorder = Recorder::new(Instant::now(), 1, 0);
        let upstream = recorder.replica(0, Unready);
        let waited = tokio::time::timeout(ms(1_000), upstream.ready_oneshot()).await;
        assert!(
            waited.is_err(),
            "a replica that is not ready is not made ready"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn outcomes_are_ok_failed_or_dropped() {
        let recorder = Recorder::new(Instant::now(), 3, 0);
        let mut upstream = recorder.replica(
            0,
            replica(|id| (id == 1).then(|| Class::new(Category::ServerError))),
        );
        attempt(&mut upstream, 0).await.unwrap();
        attempt(&mut upstream, 1).await.unwrap_err();
        // Dropped before the replica answered.
        let pending = upstream.ready().await.unwrap().call(Req { id: 2 });
        drop(pending);
        let outcomes: Vec<_> = recorder
            .finish()
            .attempts
            .iter()
            .map(|a| a.outcome)
            .collect();
        assert_eq!(
            outcomes,
            [
                AttemptOutcome::Ok,
                AttemptOutcome::Failed(Category::ServerError),
                AttemptOutcome::Dropped,
            ]
        );
    }

    #[tokio::test(start_paused = true)]
    async fn retries_are_timed_against_the_hint_they_followed() {
        let epoch = Instant::now();
        // Request 0 always fails with a 1 s hint, 1 with a hint but is trailing, 2 with no
        // hint.
        let recorder = Recorder::new(epoch, 1, 2);
        let mut upstream = recorder.replica(
            0,
            replica(|id| match id {
                0 | 1 => Some(Class::new(Category::RateLimited).with_retry_after(ms(1_000))),
                _ => Some(Class::new(Category::ServerError)),
            }),
        );
        // Each attempt fails 10 ms after it is sent. Retried 500 ms after a failure: early,
        // twice; then exactly at the hint: in time; then past it.
        attempt(&mut upstream, 0).await.unwrap_err();
        for wait in [500, 500, 1_000, 1_500] {
            advance(ms(wait)).await;
            attempt(&mut upstream, 0).await.unwrap_err();
        }
        // The last failure's hint is never followed by a retry, so it is not counted.
        // Trailing requests and failures without a hint count nothing.
        for id in [1, 1, 2, 2] {
            attempt(&mut upstream, id).await.unwrap_err();
        }
        let log = recorder.finish();
        assert_eq!(log.early_retries, 2);
        let hint = ms(1_000);
        assert_eq!(
            log.hinted_waits,
            [
                (ms(500), hint),
                (ms(500), hint),
                (ms(1_000), hint),
                (ms(1_500), hint)
            ]
        );
    }
}
