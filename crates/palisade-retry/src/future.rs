//! [`ResponseFuture`]: the attempts of one request.
//!
//! A request is in one of three states: an attempt is in flight, it waits between two attempts
//! (for a credential refresh, a backoff timer or the retry service's readiness), or it is over.
//! Each state holds what it needs, and only that; what a request carries from one failed attempt
//! to the next is boxed when it first fails, so a first attempt's future stays small (beside the
//! attempt's future, only the shared handle, the request's copy and its attempt limit) and the
//! happy path never allocates.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use palisade_core::context::attempt::{self, Attempt};
use palisade_core::failure::{AfterTimeouts, FallbackFailed};
use palisade_core::stripe::Stripe;
use palisade_core::{BoxError, Category, class_of};
use pin_project_lite::pin_project;
use tokio::time::{Instant, Sleep};
use tower_service::Service;

use crate::MaxAttempts;
use crate::budget::{Budget, Withdrawal};
use crate::ctx;
use crate::policy::{self, Failure, Retry, Stop};
use crate::service::{Handle, RefreshFuture, Shared};

pin_project! {
    #[project = StateProj]
    #[project_replace = StateOwned]
    enum State<F, S, Req> {
        // An attempt is in flight; `track` is what the request carries to a later attempt.
        Calling {
            #[pin]
            future: F,
            track: Track<S, Req>,
        },
        // Between two attempts (nothing pinned: it moves freely).
        Between { between: Between<S, Req> },
        // The output was returned.
        Done,
    }
}

impl<F, S, Req> State<F, S, Req> {
    /// Leaves `Done` in place of the state between two attempts and returns that state, to send
    /// the next attempt. Called only right after a projection found `Between`.
    fn take_between(self: Pin<&mut Self>) -> Between<S, Req> {
        match self.project_replace(State::Done) {
            StateOwned::Between { between } => between,
            StateOwned::Calling { .. } | StateOwned::Done => {
                unreachable!("the next attempt is sent from between two attempts only")
            }
        }
    }
}

/// What a request in flight carries to a later attempt. A first attempt's fits in two words for
/// a small request (the tag shares a word with the limit), and the attempt's answer is marked
/// in it too: a first attempt's future carries nothing else but the shared handle.
enum Track<S, Req> {
    /// A first attempt: `request` is the copy kept for a retry, `limit` the request's attempt
    /// limit (at least 2, or 1 when a breaker's refusal may be waited for).
    First { request: Req, limit: u32 },
    /// A first attempt that is the request's last (its limit is 1) and that no breaker's
    /// refusal can be followed by another: no copy kept.
    Only,
    /// Any attempt once the request carries more: after a failure, or when a router below
    /// reported an endpoint to avoid.
    Boxed(Box<Retries<S, Req>>),
    /// The attempt's answer was returned (the attempt's future stays until the response future
    /// is dropped).
    Answered,
}

impl<S, Req> Track<S, Req> {
    /// The number of the attempt in flight and the endpoint it avoids.
    #[inline(always)]
    fn attempt(&self) -> (u32, Option<u64>) {
        match self {
            Track::Boxed(retries) => (retries.attempts, retries.avoid),
            _ => (1, None),
        }
    }

    /// What the request carries, boxed now if it was not yet (a first attempt's copy of the
    /// request and limit move into the box).
    fn retries(&mut self) -> &mut Retries<S, Req> {
        let retries = match std::mem::replace(self, Track::Answered) {
            Track::Boxed(retries) => retries,
            Track::First { request, limit } => Retries::new(1, limit, Some(request)),
            Track::Only | Track::Answered => Retries::new(1, 1, None),
        };
        *self = Track::Boxed(retries);
        match self {
            Track::Boxed(retries) => retries,
            _ => unreachable!("boxed just above"),
        }
    }

    /// Takes what a failed attempt leaves: its number, the request's limit, the copy of the
    /// request kept for another attempt and the box, if any.
    fn take(&mut self) -> Left<S, Req> {
        match std::mem::replace(self, Track::Answered) {
            Track::First { request, limit } => (1, limit, Some(request), None),
            Track::Only | Track::Answered => (1, 1, None, None),
            Track::Boxed(mut retries) => (
                retries.attempts,
                retries.limit,
                retries.request.take(),
                Some(retries),
            ),
        }
    }
}

/// What a failed attempt leaves ([`Track::take`]): its number, the request's limit, the copy of
/// the request kept for another attempt and the box, if any.
type Left<S, Req> = (u32, u32, Option<Req>, Option<Box<Retries<S, Req>>>);

/// What a request carries from one failed attempt to the next, boxed on its first failure that
/// is retried (or when a router below reports an endpoint to avoid).
struct Retries<S, Req> {
    /// Attempts sent so far, the one in flight included.
    attempts: u32,
    /// The attempt limit of this request.
    limit: u32,
    /// While an attempt is in flight, the copy of the request kept for a later one (`None`
    /// when this attempt is the request's last and a breaker's refusal of it would not be
    /// waited for).
    request: Option<Req>,
    /// The service the retries go to: a clone of the layer's spare, made when the first retry
    /// is about to be sent.
    service: Option<S>,
    /// Earlier attempts that failed with `Category::Timeout`.
    timeouts: u32,
    /// Credentials were refreshed already.
    refreshed: bool,
    /// The previous delay.
    previous: Duration,
    /// The endpoint a router below reported failing (see `palisade_core::context::attempt`).
    avoid: Option<u64>,
    /// The backoff timer of an earlier retry, kept to be reset rather than allocated again.
    timer: Option<Pin<Box<Sleep>>>,
    /// Between two attempts: the last attempt's error, which the request returns if the next
    /// attempt is never sent (a failed refresh, a budget that does not allow it before the
    /// deadline, a deadline that passed while it waited). Dropped when the next one is sent.
    last: Option<BoxError>,
    /// The next retry waits for the budget (it was refused it).
    owed: bool,
    /// The class of failure the next retry is for, counted in the retries metric when it is
    /// sent (never for a retry decided but not sent: a deadline that passed, a failed refresh,
    /// a caller that went away).
    retrying: Option<Category>,
}

impl<S, Req> Retries<S, Req> {
    fn new(attempts: u32, limit: u32, request: Option<Req>) -> Box<Self> {
        Box::new(Retries {
            attempts,
            limit,
            request,
            service: None,
            timeouts: 0,
            refreshed: false,
            previous: Duration::ZERO,
            avoid: None,
            timer: None,
            last: None,
            owed: false,
            retrying: None,
        })
    }

    /// A timer that fires at `at`: the kept one, reset, or a new one.
    fn timer_until(&mut self, at: Instant) -> Pin<Box<Sleep>> {
        match self.timer.take() {
            Some(mut timer) => {
                timer.as_mut().reset(at);
                timer
            }
            None => Box::pin(tokio::time::sleep_until(at)),
        }
    }
}

/// Between two attempts: the next attempt's request, the budget withdrawal reserved for it
/// (refunded if it is never sent), and what it waits for.
struct Between<S, Req> {
    /// The request of the next attempt.
    request: Req,
    retries: Box<Retries<S, Req>>,
    reservation: Option<Withdrawal>,
    wait: Wait,
}

/// What the next attempt waits for.
enum Wait {
    /// The credential refresh hook (boxed: as rare as it is large, it does not make every
    /// future larger).
    Refreshing(Box<Refresh>),
    /// The backoff.
    Sleeping { timer: Pin<Box<Sleep>> },
    /// The retry service's readiness.
    Ready,
}

/// A credential refresh in progress (the authentication failure, returned if the hook fails,
/// is the request's last error, kept in [`Retries::last`]).
struct Refresh {
    /// The hook's future.
    hook: RefreshFuture,
    /// When a server's hint allows the retry (`None` without a hint): a refresh done sooner
    /// waits for it.
    until: Option<Instant>,
}

impl Wait {
    fn name(&self) -> &'static str {
        match self {
            Wait::Refreshing(_) => "refreshing",
            Wait::Sleeping { .. } => "sleeping",
            Wait::Ready => "ready",
        }
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
    ///
    /// `F` is the inner service's future, a parameter of its own rather than `S::Future`, so
    /// that the compiler can tell this future is `Send` inside an `async` block
    /// (rust-lang/rust#64552).
    #[project = Projection]
    pub struct ResponseFuture<F, S, Req, B, A>
    where
        B: Budget,
        B: ?Sized,
    {
        #[pin]
        state: State<F, S, Req>,
        handle: Arc<Stripe<Handle<S, B, A>>>,
    }

    impl<F, S, Req, B, A> PinnedDrop for ResponseFuture<F, S, Req, B, A>
    where
        B: Budget,
        B: ?Sized,
    {
        fn drop(this: Pin<&mut Self>) {
            let this = this.project();
            if let StateProj::Between { between } = this.state.project()
                && let Some(withdrawal) = between.reservation.take()
            {
                this.handle.shared.budget.refund(withdrawal);
            }
        }
    }
}

impl<S, Req, B, A> ResponseFuture<S::Future, S, Req, B, A>
where
    S: Service<Req>,
    B: Budget + ?Sized,
{
    /// The future of a request whose first attempt is `future`; `request` is a copy kept for
    /// another attempt (`None` when none may follow: `limit` allows no retry, and no breaker's
    /// refusal would be waited for).
    pub(crate) fn new(
        future: S::Future,
        handle: Arc<Stripe<Handle<S, B, A>>>,
        request: Option<Req>,
        limit: u32,
    ) -> Self {
        let track = match request {
            Some(request) => Track::First { request, limit },
            None => Track::Only,
        };
        ResponseFuture {
            state: State::Calling { future, track },
            handle,
        }
    }
}

impl<S, Req, B, A> Future for ResponseFuture<S::Future, S, Req, B, A>
where
    S: Service<Req> + Clone,
    S::Error: Into<BoxError>,
    Req: Clone,
    B: Budget + ?Sized,
    A: MaxAttempts<Req>,
{
    type Output = Result<S::Response, BoxError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        // The happy path: the first attempt answers. Everything else is out of line (`drive`
        // projects the future again, so that this path builds no projection for it).
        let this = self.as_mut().project();
        if let StateProj::Calling { future, track } = this.state.project() {
            if matches!(track, Track::Answered) {
                polled_after_completion();
            }
            match ready!(poll_attempt(future, cx, track)) {
                Ok(response) => {
                    this.handle.shared.succeeded();
                    // The attempt's future stays until this one is dropped (as tower's inner
                    // futures do): dropping it here would cost a second pass over the state.
                    *track = Track::Answered;
                    return Poll::Ready(Ok(response));
                }
                Err(error) => return drive(self.project(), cx, Some(error.into())),
            }
        }
        drive(self.project(), cx, None)
    }
}

#[cold]
#[inline(never)]
fn polled_after_completion() -> ! {
    panic!("retry ResponseFuture polled after completion")
}

/// Every state but a first answer: failures, refresh, backoff, retries. `failed` is the error
/// of the attempt in flight when the caller has already polled it to its end.
#[cold]
#[inline(never)]
fn drive<S, Req, B, A>(
    mut this: Projection<'_, S::Future, S, Req, B, A>,
    cx: &mut Context<'_>,
    mut failed: Option<BoxError>,
) -> Poll<Result<S::Response, BoxError>>
where
    S: Service<Req> + Clone,
    S::Error: Into<BoxError>,
    Req: Clone,
    B: Budget + ?Sized,
    A: MaxAttempts<Req>,
{
    loop {
        let handle = &**this.handle;
        let next = match this.state.as_mut().project() {
            StateProj::Calling { future, track } => {
                let error = match failed.take() {
                    Some(error) => error,
                    None => match ready!(poll_attempt(future, cx, track)) {
                        Ok(response) => {
                            handle.shared.succeeded();
                            this.state.set(State::Done);
                            return Poll::Ready(Ok(response));
                        }
                        Err(error) => error.into(),
                    },
                };
                let (attempts, limit, request, retries) = track.take();
                // The attempts before this one that timed out (this one is not counted yet).
                let timeouts = retries.as_ref().map_or(0, |retries| retries.timeouts);
                match after_failure(&handle.shared, (attempts, limit), error, request, retries) {
                    Ok(between) => State::Between { between },
                    Err(error) => {
                        this.state.set(State::Done);
                        return Poll::Ready(Err(after_timeouts(timeouts, error)));
                    }
                }
            }
            StateProj::Between { between } => {
                match ready!(poll_between(between, cx, handle)) {
                    Ok(Next::Readiness) => continue,
                    Ok(Next::Send) => {}
                    Err(error) => {
                        if let Some(withdrawal) = between.reservation.take() {
                            handle.shared.budget.refund(withdrawal);
                        }
                        this.state.set(State::Done);
                        return Poll::Ready(Err(error));
                    }
                }
                send(this.state.as_mut().take_between(), handle)
            }
            StateProj::Done => polled_after_completion(),
        };
        this.state.set(next);
    }
}

/// Polls an attempt inside the attempt context, so that a router below knows which attempt
/// this is and can report the endpoint that failed it. Always inlined: it is the happy path.
///
/// A retry's attempt is polled with the count of earlier attempts that timed out as well, as
/// its `call` was: a layer of the user's between this one and a timeout that calls the
/// timeout from its future, not its own `call` (`async move { inner.oneshot(req).await }`),
/// makes the timeout's `call` during this poll, and the timeout escalates from that count. A
/// first attempt's polls publish nothing more (its count is 0, published at its `call`).
#[inline(always)]
fn poll_attempt<F: Future, S, Req>(
    future: Pin<&mut F>,
    cx: &mut Context<'_>,
    track: &mut Track<S, Req>,
) -> Poll<F::Output> {
    let (number, avoid) = track.attempt();
    let mut attempt = Attempt { number, avoid };
    let out = match track {
        Track::Boxed(retries) => {
            let timeouts = retries.timeouts;
            attempt::scope(&mut attempt, || {
                attempt::with_timeouts_so_far(timeouts, || future.poll(cx))
            })
        }
        _ => attempt::scope(&mut attempt, || future.poll(cx)),
    };
    if attempt.avoid != avoid {
        track.retries().avoid = attempt.avoid;
    }
    out
}

/// Decides about a failed attempt (`attempt` is its number and the request's limit): returns
/// the error to give the caller, or the wait before the next attempt, with the budget
/// withdrawal reserved for it.
fn after_failure<S, Req, B, A>(
    shared: &Shared<B, A>,
    (attempts, limit): (u32, u32),
    error: BoxError,
    request: Option<Req>,
    retries: Option<Box<Retries<S, Req>>>,
) -> Result<Between<S, Req>, BoxError>
where
    B: Budget + ?Sized,
    A: MaxAttempts<Req>,
{
    let class = class_of(&error);
    if policy::counts_toward_throttling(&class) {
        shared.budget.on_failure();
    }
    // The request's own limit, read again from the copy kept for the next attempt: it may
    // have dropped since the first (a request body streamed past what could be kept for
    // another attempt). It only ever lowers the limit. A copy that says it cannot be sent at
    // all (`Some(0)`: its body went with the attempt) is dropped: no attempt follows, not
    // even the one a breaker refused, and the request ends with this attempt's error.
    let mut request = request;
    let limit = match request
        .as_ref()
        .and_then(|req| shared.attempts.max_attempts(req))
    {
        Some(0) => {
            request = None;
            limit.min(1)
        }
        Some(n) => limit.min(n),
        None => limit,
    };
    let now = Instant::now();
    let failure = Failure {
        class,
        attempts,
        limit,
        refreshed: retries.as_ref().is_some_and(|retries| retries.refreshed),
        previous: retries
            .as_ref()
            .map_or(Duration::ZERO, |retries| retries.previous),
    };
    // A fallback chain that failed is final for the layers above it (its class is made not
    // retryable), an authentication failure inside it too: refreshing would re-run the call
    // and every fallback.
    let refresh = shared
        .refresh
        .as_ref()
        .filter(|_| !palisade_core::error::chain(&*error).any(|e| e.is::<FallbackFailed>()));
    let decision = shared
        .policy
        .decide(&failure, now, ctx::deadline(), refresh, || {
            shared.rng.next()
        });
    let (retry, request) = match (decision, request) {
        (Ok(retry), Some(request)) => (retry, request),
        (Err(stop), _) => return Err(give_up(shared, attempts, &class, stop, error)),
        // No copy of the request was kept: its last attempt was sent (or its limit was one
        // attempt), and no breaker's refusal could be waited for, so the policy has already
        // stopped it as `Stop::Attempts`.
        (Ok(_), None) => {
            return Err(give_up(shared, attempts, &class, Stop::Attempts, error));
        }
    };
    let mut owed = false;
    let reservation = if !policy::spends_budget(&class) {
        None
    } else if let Some(withdrawal) = shared.budget.try_withdraw() {
        Some(withdrawal)
    } else if shared.policy.wait_for_budget
        && matches!(retry, Retry::After(_))
        && !policy::paced(&class)
        && ctx::deadline().is_some()
    {
        tracing::debug!(
            target: "palisade_retry",
            dependency = %shared.name,
            attempt = attempts,
            category = class.category.as_str(),
            balance = shared.budget.balance(),
            "retry budget exhausted; waiting for it",
        );
        owed = true;
        None
    } else {
        return Err(budget_exhausted(shared, attempts, &class, error));
    };
    // Refunded if what follows panics (the refresh hook is the user's code).
    let reservation = Held::new(&*shared.budget, reservation);
    let mut retries = retries.unwrap_or_else(|| Retries::new(attempts, limit, None));
    retries.limit = limit;
    retries.owed = owed;
    // Kept for the end: the request fails with it if the next attempt is never sent.
    retries.last = Some(error);
    if class.category == Category::Timeout {
        retries.timeouts += 1;
    }
    let wait = match retry {
        Retry::WaitForBreaker(delay) => {
            // The refused attempt does not count: the next one takes its number.
            retries.attempts = retries.attempts.saturating_sub(1);
            tracing::debug!(
                target: "palisade_retry",
                dependency = %shared.name,
                attempt = attempts,
                delay_ms = delay.as_millis() as u64,
                "refused by the breaker below; waiting for its next probe",
            );
            retries.retrying = Some(class.category);
            Wait::Sleeping {
                timer: retries.timer_until(policy::wake_at(now, delay)),
            }
        }
        Retry::Refresh(hook, least) => {
            tracing::debug!(
                target: "palisade_retry",
                dependency = %shared.name,
                attempt = attempts,
                category = class.category.as_str(),
                balance = shared.budget.balance(),
                "refreshing credentials before retrying",
            );
            retries.retrying = Some(class.category);
            let until = (!least.is_zero()).then(|| policy::wake_at(now, least));
            Wait::Refreshing(Box::new(Refresh {
                hook: hook(),
                until,
            }))
        }
        Retry::After(delay) => {
            // Counted when sent. A retry waiting for the budget is logged once the budget
            // allows it (`settle_budget`): it may never be sent.
            retries.retrying = Some(class.category);
            if !retries.owed {
                tracing::debug!(
                    target: "palisade_retry",
                    dependency = %shared.name,
                    attempt = attempts,
                    category = class.category.as_str(),
                    delay_ms = delay.as_millis() as u64,
                    balance = shared.budget.balance(),
                    "retrying",
                );
            }
            // Decorrelated jitter grows from the previous backoff delay; a server's hint
            // waited for is not one (a 20 s hint would let the next unhinted delay reach
            // 60 s).
            if class.retry_after.is_none() {
                retries.previous = delay;
            }
            if delay.is_zero() {
                Wait::Ready
            } else {
                Wait::Sleeping {
                    timer: retries.timer_until(policy::wake_at(now, delay)),
                }
            }
        }
    };
    Ok(Between {
        request,
        retries,
        reservation: reservation.keep(),
        wait,
    })
}

/// A budget withdrawal on its way to being kept or spent: refunded if dropped first, as when a
/// user's refresh hook, a request's clone or the inner service's `call` panics on the way, so
/// that a retry never sent costs the budget nothing (the rule [`ResponseFuture`]'s drop keeps
/// for a retry waiting). Never on the happy path: only a retry holds a withdrawal.
struct Held<'a, B: Budget + ?Sized> {
    budget: &'a B,
    withdrawal: Option<Withdrawal>,
}

impl<'a, B: Budget + ?Sized> Held<'a, B> {
    fn new(budget: &'a B, withdrawal: Option<Withdrawal>) -> Self {
        Held { budget, withdrawal }
    }

    /// The withdrawal, no longer refunded when this is dropped.
    fn keep(mut self) -> Option<Withdrawal> {
        self.withdrawal.take()
    }
}

impl<B: Budget + ?Sized> Drop for Held<'_, B> {
    fn drop(&mut self) {
        if let Some(withdrawal) = self.withdrawal.take() {
            self.budget.refund(withdrawal);
        }
    }
}

/// The final error `error` of a request, marked ([`AfterTimeouts`]) if `timeouts` of the
/// attempts before its last timed out and it is not a timeout itself: one of them may have
/// taken effect, whatever the last says. A final timeout says so on its own, and comes back as
/// it is. On the failure path only; the class is unchanged (the wrapper is transparent).
#[cold]
fn after_timeouts(timeouts: u32, error: BoxError) -> BoxError {
    if timeouts == 0 || class_of(&error).category == Category::Timeout {
        return error;
    }
    Box::new(AfterTimeouts::new(timeouts, error))
}

/// Ends a request whose retry the budget refused: traces it and returns its last error.
fn budget_exhausted<B: Budget + ?Sized, A>(
    shared: &Shared<B, A>,
    attempts: u32,
    class: &palisade_core::Class,
    error: BoxError,
) -> BoxError {
    // A warning once in a while with how many went unsaid; each one at DEBUG.
    match shared.warning.claim(Instant::now()) {
        Some(since) => tracing::warn!(
            target: "palisade_retry",
            dependency = %shared.name,
            attempt = attempts,
            category = class.category.as_str(),
            balance = shared.budget.balance(),
            since_last_warning = since,
            "retry budget exhausted; returning the last error",
        ),
        None => tracing::debug!(
            target: "palisade_retry",
            dependency = %shared.name,
            attempt = attempts,
            category = class.category.as_str(),
            balance = shared.budget.balance(),
            "retry budget exhausted; returning the last error",
        ),
    }
    palisade_core::metrics::budget_exhausted(&shared.name);
    shared.failed(class);
    error
}

/// Ends a request the policy stopped: traces why and returns its last error.
fn give_up<B: Budget + ?Sized, A>(
    shared: &Shared<B, A>,
    attempts: u32,
    class: &palisade_core::Class,
    stop: Stop,
    error: BoxError,
) -> BoxError {
    tracing::debug!(
        target: "palisade_retry",
        dependency = %shared.name,
        attempt = attempts,
        category = class.category.as_str(),
        reason = stop.as_str(),
        "not retrying",
    );
    palisade_core::metrics::gave_up(&shared.name, stop.as_str());
    shared.failed(class);
    error
}

/// Ends a request whose retry service failed its readiness check: traces it, counts the
/// request's outcome by the error's class (as every final error is counted, for adaptive
/// attempts) and returns that error.
#[cold]
fn not_ready<B: Budget + ?Sized, A>(
    shared: &Shared<B, A>,
    attempts: u32,
    error: BoxError,
) -> BoxError {
    let class = class_of(&error);
    tracing::debug!(
        target: "palisade_retry",
        dependency = %shared.name,
        attempt = attempts,
        category = class.category.as_str(),
        error = %error,
        "the retry service failed its readiness check; returning its error",
    );
    shared.failed(&class);
    error
}

/// What follows a wait between two attempts.
enum Next {
    /// The refresh or the backoff is over: the retry service's readiness.
    Readiness,
    /// The retry service is ready: sending the attempt.
    Send,
}

/// Polls what the next attempt waits for. An error ends the request: a failed refresh
/// returns the authentication failure, a failed readiness check the service's error.
fn poll_between<S, Req, B, A>(
    between: &mut Between<S, Req>,
    cx: &mut Context<'_>,
    handle: &Handle<S, B, A>,
) -> Poll<Result<Next, BoxError>>
where
    S: Service<Req> + Clone,
    S::Error: Into<BoxError>,
    B: Budget + ?Sized,
{
    let attempts = between.retries.attempts;
    match &mut between.wait {
        Wait::Refreshing(refresh) => {
            if let Err(hook_error) = ready!(refresh.hook.as_mut().poll(cx)) {
                tracing::warn!(
                    target: "palisade_retry",
                    dependency = %handle.shared.name,
                    attempt = attempts,
                    error = %hook_error,
                    "credential refresh failed; returning the authentication error",
                );
                // The hook's error is only logged: the authentication failure ends the request
                // and counts by its class as every final error does.
                let error = last_error(&mut between.retries);
                handle.shared.failed(&class_of(&error));
                return Poll::Ready(Err(after_timeouts(between.retries.timeouts, error)));
            }
            between.retries.refreshed = true;
            // The server's hint outlasts the refresh: the rest of it is waited for.
            if let Some(until) = refresh.until.filter(|until| *until > Instant::now()) {
                let timer = between.retries.timer_until(until);
                between.wait = Wait::Sleeping { timer };
                return Poll::Ready(Ok(Next::Readiness));
            }
        }
        Wait::Sleeping { timer } => ready!(timer.as_mut().poll(cx)),
        Wait::Ready => {
            if between.retries.owed {
                if let Err(error) = settle_budget(between, handle) {
                    return Poll::Ready(Err(error));
                }
                if !matches!(between.wait, Wait::Ready) {
                    // Still refused: the wait for the next look at the budget is armed.
                    return Poll::Ready(Ok(Next::Readiness));
                }
            }
            let retries = &mut *between.retries;
            // Readiness runs in the attempt's scope too: a router picks its endpoint here.
            let mut next = Attempt {
                number: attempts + 1,
                avoid: retries.avoid,
            };
            let service = retries
                .service
                .get_or_insert_with(|| handle.retry_service());
            let ready = attempt::scope(&mut next, || service.poll_ready(cx));
            // An endpoint reported failing here (a router whose pick failed at once) is
            // avoided too, whether or not the service is ready yet.
            retries.avoid = next.avoid;
            let ready = ready!(ready);
            return Poll::Ready(match ready {
                // The last look at the deadline, once nothing is left to wait for: whatever
                // the wait was (a backoff, a hold for a breaker or the budget, a refresh, this
                // readiness) and however late the task is polled, no attempt is sent at or
                // after it.
                Ok(()) if deadline_passed(handle.shared.policy.min_attempt_time) => {
                    let error = last_error(retries);
                    let class = class_of(&error);
                    let error = give_up(&handle.shared, attempts, &class, Stop::Deadline, error);
                    Err(after_timeouts(retries.timeouts, error))
                }
                Ok(()) => Ok(Next::Send),
                Err(error) => Err(after_timeouts(
                    retries.timeouts,
                    not_ready(&handle.shared, attempts, error.into()),
                )),
            });
        }
    }
    // Keep the timer for a later backoff.
    if let Wait::Sleeping { timer } = std::mem::replace(&mut between.wait, Wait::Ready) {
        between.retries.timer = Some(timer);
    }
    Poll::Ready(Ok(Next::Readiness))
}

/// A retry waiting for the budget asks it again: takes the withdrawal it allows now, or arms
/// the wait before the next look ([`policy::BUDGET_RECHECK`], stretched by a random 0–50 %), or,
/// when that look would come at or after the deadline, ends the request with the error kept
/// for it.
fn settle_budget<S, Req, B, A>(
    between: &mut Between<S, Req>,
    handle: &Handle<S, B, A>,
) -> Result<(), BoxError>
where
    B: Budget + ?Sized,
{
    let shared = &handle.shared;
    let now = Instant::now();
    // A look that comes too late (the task was polled late): the request ends as if the
    // budget had refused it to the end, and takes nothing from it.
    let floor = shared.policy.min_attempt_time;
    if ctx::deadline().is_some_and(|deadline| policy::too_late_on_waking(now, deadline, floor)) {
        return Err(held_until_the_deadline(between, shared));
    }
    if let Some(withdrawal) = shared.budget.try_withdraw() {
        allowed(
            between,
            shared,
            withdrawal,
            "retrying: the budget allows it now",
        );
        return Ok(());
    }
    if let Some(withdrawal) = shared
        .probe
        .try_claim(now)
        .then(|| shared.budget.try_probe())
        .flatten()
    {
        allowed(
            between,
            shared,
            withdrawal,
            "retrying as a probe: the budget still refuses, and held requests send nothing else",
        );
        return Ok(());
    }
    let at = now + policy::spread(policy::BUDGET_RECHECK, &mut shared.rng.next());
    if ctx::deadline().is_none_or(|deadline| policy::too_late(at, deadline, floor)) {
        return Err(held_until_the_deadline(between, shared));
    }
    between.wait = Wait::Sleeping {
        timer: between.retries.timer_until(at),
    };
    Ok(())
}

/// Ends a request whose retry the budget did not allow before the deadline with the error
/// kept for it.
fn held_until_the_deadline<S, Req, B: Budget + ?Sized, A>(
    between: &mut Between<S, Req>,
    shared: &Shared<B, A>,
) -> BoxError {
    let error = last_error(&mut between.retries);
    let class = class_of(&error);
    let error = budget_exhausted(shared, between.retries.attempts, &class, error);
    // A last error that is a timeout is returned as it is; any other is marked with the
    // attempts that timed out before it.
    after_timeouts(between.retries.timeouts, error)
}

/// The error of the last attempt, kept between two attempts for the request to end with.
fn last_error<S, Req>(retries: &mut Retries<S, Req>) -> BoxError {
    retries
        .last
        .take()
        .expect("the last error is kept until the next attempt is sent")
}

/// Whether the deadline, if any, is too near for an attempt whose wait just ended (less than
/// `floor` left, a timer tick allowed; see
/// [`RetryBuilder::min_attempt_time`](crate::RetryBuilder::min_attempt_time)): such an
/// attempt cannot be sent. Reads the clock only under a deadline, and only before a retry.
fn deadline_passed(floor: Duration) -> bool {
    ctx::deadline()
        .is_some_and(|deadline| policy::too_late_on_waking(Instant::now(), deadline, floor))
}

/// A retry that waited for the budget goes out with `withdrawal`: logged (`message`) now that
/// the budget allows it (counted as retried when it is sent).
fn allowed<S, Req, B: Budget + ?Sized, A>(
    between: &mut Between<S, Req>,
    shared: &Shared<B, A>,
    withdrawal: Withdrawal,
    message: &'static str,
) {
    between.reservation = Some(withdrawal);
    if std::mem::take(&mut between.retries.owed) {
        let error = (between.retries.last.as_ref()).expect("a held retry keeps its error");
        let category = class_of(error).category;
        tracing::debug!(
            target: "palisade_retry",
            dependency = %shared.name,
            attempt = between.retries.attempts,
            category = category.as_str(),
            balance = shared.budget.balance(),
            "{message}",
        );
    }
}

/// Sends the next attempt to the retry service `poll_between` made ready: a copy of the
/// request while yet another attempt may follow, the request itself for the last. The budget
/// withdrawal reserved for it is spent.
fn send<S, Req, B, A>(
    between: Between<S, Req>,
    handle: &Handle<S, B, A>,
) -> State<S::Future, S, Req>
where
    S: Service<Req> + Clone,
    Req: Clone,
    B: Budget + ?Sized,
{
    let Between {
        request,
        mut retries,
        reservation,
        ..
    } = between;
    // Spent once the attempt is sent; refunded if the request's clone or the call panics.
    let reservation = Held::new(&*handle.shared.budget, reservation);
    retries.attempts += 1;
    // The attempt goes out: the error of the one before is no longer the request's last.
    retries.last = None;
    // A copy for a later attempt, unless this is the last one; waiting for a breaker (under a
    // deadline), even the last attempt may be refused and followed by another.
    let another_may_follow =
        retries.attempts < retries.limit || handle.shared.refusal_may_be_waited_for();
    let (request, kept) = if another_may_follow {
        (request.clone(), Some(request))
    } else {
        (request, None)
    };
    retries.request = kept;
    tracing::trace!(
        target: "palisade_retry",
        dependency = %handle.shared.name,
        attempt = retries.attempts,
        timeouts = retries.timeouts,
        "sending retry",
    );
    let mut attempt = Attempt {
        number: retries.attempts,
        avoid: retries.avoid,
    };
    let timeouts = retries.timeouts;
    let service = retries
        .service
        .get_or_insert_with(|| handle.retry_service());
    let future = attempt::scope(&mut attempt, || {
        ctx::with_timeouts(timeouts, || service.call(request))
    });
    retries.avoid = attempt.avoid;
    // Sent: the retry has spent its withdrawal, and counts as retried.
    let _spent = reservation.keep();
    if let Some(category) = retries.retrying.take() {
        palisade_core::metrics::retried(&handle.shared.name, category);
    }
    State::Calling {
        future,
        track: Track::Boxed(retries),
    }
}

impl<F, S, Req, B, A> fmt::Debug for ResponseFuture<F, S, Req, B, A>
where
    B: Budget + ?Sized,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // A finished request shows 0 attempts of limit 0: what it counted is gone.
        let (state, attempts, limit, timeouts, reserved) = match &self.state {
            State::Calling { track, .. } => match track {
                Track::First { limit, .. } => ("calling", 1, *limit, 0, false),
                Track::Only => ("calling", 1, 1, 0, false),
                Track::Boxed(retries) => (
                    "calling",
                    retries.attempts,
                    retries.limit,
                    retries.timeouts,
                    false,
                ),
                Track::Answered => ("done", 0, 0, 0, false),
            },
            State::Between { between } => (
                between.wait.name(),
                between.retries.attempts,
                between.retries.limit,
                between.retries.timeouts,
                between.reservation.is_some(),
            ),
            State::Done => ("done", 0, 0, 0, false),
        };
        f.debug_struct("ResponseFuture")
            .field("state", &state)
            .field("attempts", &attempts)
            .field("limit", &limit)
            .field("timeouts", &timeouts)
            .field("reserved", &reserved)
            .finish()
    }
}
