//! [`ResponseFuture`]: the attempts of one request.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use palisade_classify::context::attempt::{self, Attempt};
use palisade_classify::stripe::Stripe;
use palisade_classify::{BoxError, Category, class_of};
use pin_project_lite::pin_project;
use tokio::time::{Instant, Sleep};
use tower_service::Service;

use crate::budget::{Budget, Withdrawal};
use crate::ctx;
use crate::policy::{self, Decision, Failure};
use crate::service::{Handle, RefreshFuture};

pin_project! {
    #[project = StateProj]
    enum State<F> {
        // An attempt is in flight.
        Calling { #[pin] future: F },
        // The credential refresh hook runs (in `Slow::hook`).
        Refreshing,
        // Backing off before the next attempt (the timer is in `Slow::sleep`).
        Sleeping,
        // Waiting for the inner service to be ready for the next attempt.
        Ready,
        Done,
    }
}

/// What only a failed request needs, boxed on its first failure so that the happy path's
/// future stays small.
struct Slow<S, E> {
    /// The service the retries go to (a clone, made at the first retry).
    service: Option<S>,
    /// Earlier attempts that failed with `Category::Timeout`.
    timeouts: u32,
    /// Credentials were refreshed already.
    refreshed: bool,
    /// The previous delay.
    previous: Duration,
    /// The budget withdrawal reserved for the next attempt, refunded if it is never sent.
    reservation: Option<Withdrawal>,
    /// The backoff timer, reused from one retry to the next.
    sleep: Option<Pin<Box<Sleep>>>,
    /// The refresh hook's future, and the authentication error to return if it fails.
    hook: Option<(RefreshFuture, E)>,
    /// The endpoint a router below reported failing (see `palisade_classify::context::attempt`).
    avoid: Option<u64>,
}

impl<S, E> Slow<S, E> {
    fn new() -> Box<Self> {
        Box::new(Slow {
            service: None,
            timeouts: 0,
            refreshed: false,
            previous: Duration::ZERO,
            reservation: None,
            sleep: None,
            hook: None,
            avoid: None,
        })
    }
}

pin_project! {
    /// The response future of [`Retry`](crate::Retry): runs the attempts of one request.
    ///
    /// Dropping it at any point releases everything it holds: the attempt in flight, the
    /// backoff timer, and the budget withdrawal reserved for a retry not yet sent (refunded).
    ///
    /// # Panics
    ///
    /// When polled again after it returned its output ("polled after completion"), as tower's
    /// futures do.
    #[project = Projection]
    pub struct ResponseFuture<S, Req, B, A>
    where
        S: Service<Req>,
        B: Budget,
        B: ?Sized,
    {
        #[pin]
        state: State<S::Future>,
        handle: Arc<Stripe<Handle<S, B, A>>>,
        request: Option<Req>,
        attempts: u32,
        limit: u32,
        slow: Option<Box<Slow<S, BoxError>>>,
    }

    impl<S, Req, B, A> PinnedDrop for ResponseFuture<S, Req, B, A>
    where
        S: Service<Req>,
        B: Budget,
        B: ?Sized,
    {
        fn drop(this: Pin<&mut Self>) {
            let this = this.project();
            if let Some(withdrawal) = this.slow.as_mut().and_then(|slow| slow.reservation.take()) {
                this.handle.shared.budget.refund(withdrawal);
            }
        }
    }
}

impl<S, Req, B, A> ResponseFuture<S, Req, B, A>
where
    S: Service<Req>,
    B: Budget + ?Sized,
{
    pub(crate) fn new(
        future: S::Future,
        handle: Arc<Stripe<Handle<S, B, A>>>,
        request: Option<Req>,
        limit: u32,
    ) -> Self {
        ResponseFuture {
            state: State::Calling { future },
            handle,
            request,
            attempts: 1,
            limit,
            slow: None,
        }
    }
}

impl<S, Req, B, A> Future for ResponseFuture<S, Req, B, A>
where
    S: Service<Req> + Clone,
    S::Error: Into<BoxError>,
    Req: Clone,
    B: Budget + ?Sized,
{
    type Output = Result<S::Response, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        // The happy path: the first attempt answers. Everything else is out of line.
        if let StateProj::Calling { future } = this.state.as_mut().project() {
            match ready!(poll_attempt(future, cx, *this.attempts, this.slow)) {
                Ok(response) => {
                    this.handle.shared.succeeded();
                    this.state.set(State::Done);
                    return Poll::Ready(Ok(response));
                }
                Err(error) => return drive(this, cx, Some(error.into())),
            }
        }
        drive(this, cx, None)
    }
}

/// Polls an attempt inside the attempt context, so that a router below knows which attempt
/// this is and can report the endpoint that failed it.
#[inline]
fn poll_attempt<F: Future, S, E>(
    future: Pin<&mut F>,
    cx: &mut Context<'_>,
    number: u32,
    slow: &mut Option<Box<Slow<S, E>>>,
) -> Poll<F::Output> {
    let avoid = slow.as_ref().and_then(|slow| slow.avoid);
    let mut attempt = Attempt { number, avoid };
    let out = attempt::scope(&mut attempt, || future.poll(cx));
    if attempt.avoid != avoid {
        slow.get_or_insert_with(Slow::new).avoid = attempt.avoid;
    }
    out
}

/// Every state but a first answer: failures, backoff, refresh, retries.
#[cold]
#[inline(never)]
fn drive<S, Req, B, A>(
    mut this: Projection<'_, S, Req, B, A>,
    cx: &mut Context<'_>,
    mut failed: Option<BoxError>,
) -> Poll<Result<S::Response, BoxError>>
where
    S: Service<Req> + Clone,
    S::Error: Into<BoxError>,
    Req: Clone,
    B: Budget + ?Sized,
{
    loop {
        if let Some(error) = failed.take() {
            let shared = &*this.handle.shared;
            let slow = this.slow.get_or_insert_with(Slow::new);
            let class = class_of(&error);
            if class.category == Category::Timeout {
                slow.timeouts += 1;
            }
            if policy::counts_toward_throttling(&class) {
                shared.budget.on_failure();
            }
            let now = Instant::now();
            let failure = Failure {
                class,
                attempts: *this.attempts,
                limit: if this.request.is_some() {
                    *this.limit
                } else {
                    1
                },
                refreshed: slow.refreshed,
                previous: slow.previous,
            };
            let decision = shared
                .policy
                .decide(&failure, now, ctx::deadline(), || shared.rng.next());
            let delay = match decision {
                Decision::Stop(stop) => {
                    tracing::debug!(
                        target: "palisade_retry",
                        dependency = %shared.name,
                        attempt = *this.attempts,
                        category = class.category.as_str(),
                        reason = stop.as_str(),
                        "not retrying",
                    );
                    palisade_classify::metrics::gave_up(&shared.name, stop.as_str());
                    shared.failed(&class);
                    this.state.set(State::Done);
                    return Poll::Ready(Err(error));
                }
                Decision::Refresh => None,
                Decision::Retry(delay) => Some(delay),
            };
            let withdrawal = if !policy::spends_budget(&class) {
                None
            } else if let Some(withdrawal) = shared.budget.try_withdraw() {
                Some(withdrawal)
            } else {
                tracing::warn!(
                    target: "palisade_retry",
                    dependency = %shared.name,
                    attempt = *this.attempts,
                    category = class.category.as_str(),
                    balance = shared.budget.balance(),
                    "retry budget exhausted; returning the last error",
                );
                palisade_classify::metrics::budget_exhausted(&shared.name);
                shared.failed(&class);
                this.state.set(State::Done);
                return Poll::Ready(Err(error));
            };
            slow.reservation = withdrawal;
            match delay {
                None => {
                    tracing::debug!(
                        target: "palisade_retry",
                        dependency = %shared.name,
                        attempt = *this.attempts,
                        category = class.category.as_str(),
                        balance = shared.budget.balance(),
                        "refreshing credentials before retrying",
                    );
                    palisade_classify::metrics::retried(&shared.name, class.category);
                    let hook = shared
                        .refresh
                        .as_ref()
                        .expect("a refresh decision implies a hook")(
                    );
                    slow.hook = Some((hook, error));
                    this.state.set(State::Refreshing);
                }
                Some(delay) => {
                    tracing::debug!(
                        target: "palisade_retry",
                        dependency = %shared.name,
                        attempt = *this.attempts,
                        category = class.category.as_str(),
                        delay_ms = delay.as_millis() as u64,
                        balance = shared.budget.balance(),
                        "retrying",
                    );
                    palisade_classify::metrics::retried(&shared.name, class.category);
                    drop(error);
                    slow.previous = delay;
                    if delay.is_zero() {
                        this.state.set(State::Ready);
                    } else {
                        let at = now + delay;
                        match &mut slow.sleep {
                            Some(sleep) => sleep.as_mut().reset(at),
                            None => slow.sleep = Some(Box::pin(tokio::time::sleep_until(at))),
                        }
                        this.state.set(State::Sleeping);
                    }
                }
            }
            continue;
        }
        match this.state.as_mut().project() {
            StateProj::Calling { future } => {
                match ready!(poll_attempt(future, cx, *this.attempts, this.slow)) {
                    Ok(response) => {
                        this.handle.shared.succeeded();
                        this.state.set(State::Done);
                        return Poll::Ready(Ok(response));
                    }
                    Err(error) => failed = Some(error.into()),
                }
            }
            StateProj::Refreshing => {
                let slow = this.slow.as_mut().expect("refreshing after a failure");
                let (hook, _) = slow.hook.as_mut().expect("a hook while refreshing");
                match ready!(hook.as_mut().poll(cx)) {
                    Ok(()) => {
                        slow.hook = None;
                        slow.refreshed = true;
                        this.state.set(State::Ready);
                    }
                    Err(hook_error) => {
                        tracing::warn!(
                            target: "palisade_retry",
                            dependency = %this.handle.shared.name,
                            attempt = *this.attempts,
                            error = %hook_error,
                            "credential refresh failed; returning the authentication error",
                        );
                        let (_, error) = slow.hook.take().expect("a hook while refreshing");
                        if let Some(withdrawal) = slow.reservation.take() {
                            this.handle.shared.budget.refund(withdrawal);
                        }
                        this.state.set(State::Done);
                        return Poll::Ready(Err(error));
                    }
                }
            }
            StateProj::Sleeping => {
                let slow = this.slow.as_mut().expect("sleeping after a failure");
                let sleep = slow.sleep.as_mut().expect("a timer while sleeping");
                ready!(sleep.as_mut().poll(cx));
                this.state.set(State::Ready);
            }
            StateProj::Ready => {
                let slow = this.slow.as_mut().expect("retrying after a failure");
                // Readiness runs in the attempt's scope too: a router picks its endpoint here.
                let mut next = Attempt {
                    number: *this.attempts + 1,
                    avoid: slow.avoid,
                };
                let inner = slow
                    .service
                    .get_or_insert_with(|| this.handle.retry_service());
                let ready = attempt::scope(&mut next, || inner.poll_ready(cx));
                if let Err(error) = ready!(ready) {
                    if let Some(withdrawal) = slow.reservation.take() {
                        this.handle.shared.budget.refund(withdrawal);
                    }
                    this.state.set(State::Done);
                    return Poll::Ready(Err(error.into()));
                }
                *this.attempts += 1;
                // Clone only if yet another attempt may follow this one.
                let request = if *this.attempts < *this.limit {
                    this.request.clone()
                } else {
                    this.request.take()
                }
                .expect("a retry implies a retained request");
                // The withdrawal is spent: the retry is sent.
                slow.reservation = None;
                tracing::trace!(
                    target: "palisade_retry",
                    dependency = %this.handle.shared.name,
                    attempt = *this.attempts,
                    timeouts = slow.timeouts,
                    "sending retry",
                );
                let inner = slow
                    .service
                    .as_mut()
                    .expect("the retry service was made ready");
                let mut attempt = Attempt {
                    number: *this.attempts,
                    avoid: slow.avoid,
                };
                let timeouts = slow.timeouts;
                let future = attempt::scope(&mut attempt, || {
                    ctx::with_timeouts(timeouts, || inner.call(request))
                });
                slow.avoid = attempt.avoid;
                this.state.set(State::Calling { future });
            }
            StateProj::Done => panic!("retry ResponseFuture polled after completion"),
        }
    }
}

impl<S, Req, B, A> fmt::Debug for ResponseFuture<S, Req, B, A>
where
    S: Service<Req>,
    B: Budget + ?Sized,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match &self.state {
            State::Calling { .. } => "calling",
            State::Refreshing => "refreshing",
            State::Sleeping => "sleeping",
            State::Ready => "ready",
            State::Done => "done",
        };
        let slow = self.slow.as_deref();
        f.debug_struct("ResponseFuture")
            .field("state", &state)
            .field("attempts", &self.attempts)
            .field("limit", &self.limit)
            .field("timeouts", &slow.map_or(0, |s| s.timeouts))
            .field("reserved", &slow.is_some_and(|s| s.reservation.is_some()))
            .finish()
    }
}
