//! [`ResponseFuture`]: the attempts of one request.

use std::error::Error;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use palisade_classify::{Category, class_of_dyn};
use pin_project_lite::pin_project;
use tokio::time::{Instant, Sleep};
use tower_service::Service;

use crate::budget::{Budget, Withdrawal};
use crate::ctx;
use crate::policy::{Decision, Failure};
use crate::service::{RefreshFuture, Shared};

pin_project! {
    #[project = StateProj]
    enum State<F, E> {
        // An attempt is in flight.
        Calling { #[pin] future: F },
        // The credential refresh hook runs; the authentication error waits to be returned if it
        // fails.
        Refreshing { hook: RefreshFuture, error: Option<E> },
        // Backing off before the next attempt.
        Sleeping,
        // Waiting for the inner service to be ready for the next attempt.
        Ready,
        Done,
    }
}

pin_project! {
    /// The response future of [`Retry`](crate::Retry): runs the attempts of one request.
    ///
    /// Dropping it at any point releases everything it holds: the attempt in flight, the
    /// backoff timer, and the budget withdrawal reserved for a retry not yet sent (refunded).
    pub struct ResponseFuture<S, Req, B, A>
    where
        S: Service<Req>,
        B: Budget,
        B: ?Sized,
    {
        #[pin]
        state: State<S::Future, S::Error>,
        inner: S,
        shared: Arc<Shared<B, A>>,
        request: Option<Req>,
        attempts: u32,
        limit: u32,
        timeouts: u32,
        refreshed: bool,
        previous: Duration,
        reservation: Option<Withdrawal>,
        sleep: Option<Pin<Box<Sleep>>>,
    }

    impl<S, Req, B, A> PinnedDrop for ResponseFuture<S, Req, B, A>
    where
        S: Service<Req>,
        B: Budget,
        B: ?Sized,
    {
        fn drop(this: Pin<&mut Self>) {
            let this = this.project();
            if let Some(withdrawal) = this.reservation.take() {
                this.shared.budget.refund(withdrawal);
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
        inner: S,
        shared: Arc<Shared<B, A>>,
        request: Option<Req>,
        limit: u32,
    ) -> Self {
        ResponseFuture {
            state: State::Calling { future },
            inner,
            shared,
            request,
            attempts: 1,
            limit,
            timeouts: 0,
            refreshed: false,
            previous: Duration::ZERO,
            reservation: None,
            sleep: None,
        }
    }
}

impl<S, Req, B, A> Future for ResponseFuture<S, Req, B, A>
where
    S: Service<Req>,
    S::Error: AsRef<dyn Error + Send + Sync + 'static>,
    Req: Clone,
    B: Budget + ?Sized,
{
    type Output = Result<S::Response, S::Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        loop {
            match this.state.as_mut().project() {
                StateProj::Calling { future } => {
                    let error = match ready!(future.poll(cx)) {
                        Ok(response) => {
                            this.shared.succeeded();
                            this.state.set(State::Done);
                            return Poll::Ready(Ok(response));
                        }
                        Err(error) => error,
                    };
                    let shared = &**this.shared;
                    let class = class_of_dyn(error.as_ref());
                    if class.category == Category::Timeout {
                        *this.timeouts += 1;
                    }
                    if class.retryable {
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
                        refreshed: *this.refreshed,
                        previous: *this.previous,
                    };
                    let decision = shared
                        .policy
                        .decide(&failure, now, ctx::deadline(), || shared.rng.next());
                    let delay = match decision {
                        Decision::Stop(stop) => {
                            tracing::debug!(
                                target: "palisade_retry",
                                attempt = *this.attempts,
                                category = class.category.as_str(),
                                reason = stop.as_str(),
                                "not retrying",
                            );
                            shared.failed(&class);
                            this.state.set(State::Done);
                            return Poll::Ready(Err(error));
                        }
                        Decision::Refresh => None,
                        Decision::Retry(delay) => Some(delay),
                    };
                    let Some(withdrawal) = shared.budget.try_withdraw() else {
                        tracing::warn!(
                            target: "palisade_retry",
                            attempt = *this.attempts,
                            category = class.category.as_str(),
                            balance = shared.budget.balance(),
                            "retry budget exhausted; returning the last error",
                        );
                        shared.failed(&class);
                        this.state.set(State::Done);
                        return Poll::Ready(Err(error));
                    };
                    *this.reservation = Some(withdrawal);
                    match delay {
                        None => {
                            tracing::debug!(
                                target: "palisade_retry",
                                attempt = *this.attempts,
                                category = class.category.as_str(),
                                balance = shared.budget.balance(),
                                "refreshing credentials before retrying",
                            );
                            let hook = shared
                                .refresh
                                .as_ref()
                                .expect("a refresh decision implies a hook")(
                            );
                            this.state.set(State::Refreshing {
                                hook,
                                error: Some(error),
                            });
                        }
                        Some(delay) => {
                            tracing::debug!(
                                target: "palisade_retry",
                                attempt = *this.attempts,
                                category = class.category.as_str(),
                                delay_ms = delay.as_millis() as u64,
                                balance = shared.budget.balance(),
                                "retrying",
                            );
                            drop(error);
                            *this.previous = delay;
                            if delay.is_zero() {
                                this.state.set(State::Ready);
                            } else {
                                let at = now + delay;
                                match this.sleep {
                                    Some(sleep) => sleep.as_mut().reset(at),
                                    None => {
                                        *this.sleep = Some(Box::pin(tokio::time::sleep_until(at)))
                                    }
                                }
                                this.state.set(State::Sleeping);
                            }
                        }
                    }
                }
                StateProj::Refreshing { hook, error } => match ready!(hook.as_mut().poll(cx)) {
                    Ok(()) => {
                        *this.refreshed = true;
                        this.state.set(State::Ready);
                    }
                    Err(hook_error) => {
                        tracing::warn!(
                            target: "palisade_retry",
                            attempt = *this.attempts,
                            error = %hook_error,
                            "credential refresh failed; returning the authentication error",
                        );
                        let error = error.take().expect("the error waits in Refreshing");
                        if let Some(withdrawal) = this.reservation.take() {
                            this.shared.budget.refund(withdrawal);
                        }
                        this.state.set(State::Done);
                        return Poll::Ready(Err(error));
                    }
                },
                StateProj::Sleeping => {
                    let sleep = this.sleep.as_mut().expect("a timer while sleeping");
                    ready!(sleep.as_mut().poll(cx));
                    this.state.set(State::Ready);
                }
                StateProj::Ready => {
                    if let Err(error) = ready!(this.inner.poll_ready(cx)) {
                        if let Some(withdrawal) = this.reservation.take() {
                            this.shared.budget.refund(withdrawal);
                        }
                        this.state.set(State::Done);
                        return Poll::Ready(Err(error));
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
                    *this.reservation = None;
                    tracing::trace!(
                        target: "palisade_retry",
                        attempt = *this.attempts,
                        timeouts = *this.timeouts,
                        "sending retry",
                    );
                    let inner = &mut *this.inner;
                    let future = ctx::with_timeouts(*this.timeouts, || inner.call(request));
                    this.state.set(State::Calling { future });
                }
                StateProj::Done => panic!("retry ResponseFuture polled after completion"),
            }
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
            State::Refreshing { .. } => "refreshing",
            State::Sleeping => "sleeping",
            State::Ready => "ready",
            State::Done => "done",
        };
        f.debug_struct("ResponseFuture")
            .field("state", &state)
            .field("attempts", &self.attempts)
            .field("limit", &self.limit)
            .field("timeouts", &self.timeouts)
            .field("reserved", &self.reservation.is_some())
            .finish()
    }
}
