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
    /// When it was sent, since the run's start.
    pub sent: Duration,
    /// How long until the caller had its answer or gave up.
    pub latency: Duration,
    /// Whether the caller got a real answer from the upstream.
    pub ok: bool,
    /// How many attempts it sent to the upstream.
    pub attempts: u32,
    /// Whether the caller had to give up at its deadline: the stack had not answered by then.
    pub cut_off: bool,
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

    /// Records a finished request (trailing ones are not recorded).
    pub fn request(&self, id: u64, sent: Instant, ok: bool, cut_off: bool) {
        if id >= self.measured {
            return;
        }
        let now = Instant::now();
        let mut log = self.lock();
        let attempts = log.per_request.get(id as usize).copied().unwrap_or(0);
        log.requests.push(RequestRecord {
            sent: sent - self.epoch,
            latency: now - sent,
            ok,
            attempts,
            cut_off,
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
