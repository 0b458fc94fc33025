//! Carrying the context across a task boundary, in the request.
//!
//! The [context](super) follows the poll on the current thread. It does not reach code that
//! runs on another task: the worker of a `tower::buffer::Buffer` (which runs `poll_ready` and
//! `call` of the service below it), a spawned task, a client whose `call` runs on a task of its
//! own. Put [`CarryLayer`] just above such a boundary and [`ResumeLayer`] just below it, and the
//! layers on both sides talk as if nothing were between them:
//!
//! ```text
//!   Retry / Deadline          sets the context while it polls and calls
//!   CarryLayer                copies it into the request (and listens for reports)
//!   ── Buffer, spawn, … ──    the boundary
//!   ResumeLayer               takes it out and sets it again around call and every poll
//!   Route / Timeout / Retry   read it as usual
//! ```
//!
//! What crosses, and in which direction:
//! - down: the deadline (as an instant: a lazy deadline starts its clock when carried), the
//!   attempt ([`Attempt`]: its number and the endpoint to avoid) and the number of earlier
//!   attempts that timed out (so a timeout below escalates);
//! - up: the endpoint a router below reported failing
//!   ([`attempt::report_failed_endpoint`]), so the retry above sends the next attempt
//!   elsewhere.
//!
//! What does not cross: "this attempt is being dropped because its time is up"
//! ([`attempt::timing_out`]). Behind a `Buffer` it needs no carrying (the response future
//! below the buffer is dropped on the caller's task, inside the timeout's drop); across a
//! spawned task the future below is not dropped with the one above at all. Nor does the
//! carried deadline end the work below by itself: a per-attempt timeout there reads it only
//! when its own limit is up, so an attempt on the spawned task runs to that limit after the
//! caller has given up. To bound it by the caller's deadline, put a deadline layer (such as
//! palisade-timeout's `Deadline`) just below [`ResumeLayer`]: it takes the carried deadline
//! as its enclosing one and drops the work below when it ends.
//!
//! # The request carries it
//!
//! The context travels in the request, so the request type must have room for it:
//! implement [`Carrier`] (two methods) for your own request type. With the `http` feature,
//! `http::Request<B>` implements it through its extensions.
//!
//! # Cost
//!
//! Nothing is carried, and nothing allocated, when there is no context to carry (no deadline,
//! no attempt, no timed-out attempts). Otherwise each call allocates one shared cell for the
//! report back (only under an attempt scope), plus whatever the request type needs to hold a
//! [`Carried`] (for `http::Request`, the extensions map). A boundary such as `Buffer` already
//! allocates per call.
//!
//! # Example
//!
//! ```
//! use std::convert::Infallible;
//! use palisade_core::context::{self, attempt::{self, Attempt}};
//! use palisade_core::context::carry::{Carried, Carrier, CarryLayer, ResumeLayer};
//! use tower::{Layer, Service, service_fn};
//!
//! /// A request type with room for the context.
//! struct Prompt {
//!     text: String,
//!     context: Option<Carried>,
//! }
//!
//! impl Carrier for Prompt {
//!     fn carry_context(&mut self, context: Carried) {
//!         self.context = Some(context);
//!     }
//!     fn take_context(&mut self) -> Option<Carried> {
//!         self.context.take()
//!     }
//! }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! // Below the boundary: a "router" that sees the attempt and reports endpoint 7 failing.
//! let below = service_fn(|p: Prompt| async move {
//!     assert_eq!(attempt::current().map(|a| a.number), Some(2));
//!     attempt::report_failed_endpoint(7);
//!     Ok::<_, Infallible>(p.text.len())
//! });
//! // The boundary: here a task of its own per call.
//! let below = ResumeLayer::new().layer(below);
//! let boundary = service_fn(move |p: Prompt| {
//!     let mut below = below.clone();
//!     async move { tokio::spawn(below.call(p)).await.unwrap() }
//! });
//! let mut above = CarryLayer::new().layer(boundary);
//!
//! // Above: a retry's attempt scope around the call and each poll.
//! let mut state = Attempt { number: 2, avoid: None };
//! let prompt = Prompt { text: "hello".into(), context: None };
//! let call = attempt::scope(&mut state, || above.call(prompt));
//! let mut call = std::pin::pin!(call);
//! let out = std::future::poll_fn(|cx| attempt::scope(&mut state, || call.as_mut().poll(cx))).await;
//! assert_eq!(out.unwrap(), 5);
//! assert_eq!(state.avoid, Some(7)); // the report crossed back
//! # use std::future::Future;
//! # }
//! ```

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::task::{Context, Poll, ready};

use pin_project_lite::pin_project;
use tokio::time::Instant;
use tower_layer::Layer;
use tower_service::Service;

use super::attempt::{self, Attempt};
use super::{deadline, isolated, with_deadline};

/// The context of one call, as it crosses a task boundary inside the request.
///
/// Made by [`Carry`] from the context it runs in, read by [`Resume`]; its fields are private
/// so that only those two interpret it. Cloning it shares the report channel.
#[derive(Clone)]
pub struct Carried {
    deadline: Option<Instant>,
    attempt: Option<Attempt>,
    timeouts: u32,
    /// Where the side below reports the endpoint that failed (0 for none); present only under
    /// an attempt scope.
    report: Option<Arc<AtomicU64>>,
}

impl fmt::Debug for Carried {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Carried")
            .field("deadline", &self.deadline)
            .field("attempt", &self.attempt)
            .field("timeouts", &self.timeouts)
            .finish_non_exhaustive()
    }
}

impl Carried {
    /// The context of the current thread, or `None` when there is none to carry.
    fn capture() -> Option<Carried> {
        let deadline = deadline();
        let attempt = attempt::current();
        let timeouts = attempt::timeouts_so_far();
        if deadline.is_none() && attempt.is_none() && timeouts == 0 {
            return None;
        }
        Some(Carried {
            deadline,
            attempt,
            timeouts,
            report: attempt.map(|_| Arc::new(AtomicU64::new(0))),
        })
    }

    /// The deadline it carries, if any.
    pub fn deadline(&self) -> Option<Instant> {
        self.deadline
    }

    /// The attempt it carries, if any.
    pub fn attempt(&self) -> Option<Attempt> {
        self.attempt
    }

    /// How many earlier attempts of the request timed out.
    pub fn timeouts_so_far(&self) -> u32 {
        self.timeouts
    }
}

/// A request type that can carry palisade's [context](super) across a task boundary.
///
/// Two methods: store a [`Carried`] in the request, take it out again. [`CarryLayer`] calls
/// the first above the boundary, [`ResumeLayer`] the second below it. `take_context` must
/// return what `carry_context` stored (and `None` when nothing was), once.
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot carry palisade's context across a task boundary",
    label = "this request type does not implement `Carrier`",
    note = "`http::Request` implements it with palisade-core's `http` feature; for your own request type, implement the two methods of `Carrier` (store a `Carried` in a field, take it out)"
)]
pub trait Carrier {
    /// Stores `context` in the request, replacing any stored before.
    fn carry_context(&mut self, context: Carried);

    /// Takes the stored context out of the request.
    fn take_context(&mut self) -> Option<Carried>;
}

#[cfg(feature = "http")]
impl<B> Carrier for http::Request<B> {
    fn carry_context(&mut self, context: Carried) {
        self.extensions_mut().insert(context);
    }

    fn take_context(&mut self) -> Option<Carried> {
        self.extensions_mut().remove::<Carried>()
    }
}

/// Puts [`Carry`] in front of a service: place it just above a task boundary, with
/// [`ResumeLayer`] just below it (see the [module docs](self)).
#[derive(Clone, Copy, Debug, Default)]
pub struct CarryLayer(());

impl CarryLayer {
    /// The layer.
    pub fn new() -> Self {
        CarryLayer(())
    }
}

impl<S> Layer<S> for CarryLayer {
    type Service = Carry<S>;

    fn layer(&self, inner: S) -> Carry<S> {
        Carry { inner }
    }
}

/// Copies the current context into each request and passes back what the side below
/// reported; see the [module docs](self).
///
/// # Panics
/// `Carry` reserves nothing in `poll_ready`: `poll_ready`, `call` and polls of its response
/// future after completion are forwarded to the inner service and future, whose own contract
/// applies.
#[derive(Clone, Debug)]
pub struct Carry<S> {
    inner: S,
}

impl<S> Carry<S> {
    /// Wraps `inner`.
    pub fn new(inner: S) -> Self {
        Carry { inner }
    }

    /// The inner service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// Unwraps the inner service.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S, Req> Service<Req> for Carry<S>
where
    S: Service<Req>,
    Req: Carrier,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = CarryFuture<S::Future>;

    #[inline]
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Req) -> Self::Future {
        let carried = Carried::capture();
        let report = carried.as_ref().and_then(|c| c.report.clone());
        match carried {
            Some(carried) => req.carry_context(carried),
            // Nothing to carry: a context the request still holds (from an earlier hop whose
            // Resume it never met) is not this call's, and the Resume below must not run the
            // call under its deadline and attempt.
            None => drop(req.take_context()),
        }
        CarryFuture {
            inner: self.inner.call(req),
            report,
        }
    }
}

pin_project! {
    /// The response future of [`Carry`]: when the call completes, passes the endpoint the side
    /// below reported failing to the attempt scope it is polled in.
    #[derive(Debug)]
    pub struct CarryFuture<F> {
        #[pin]
        inner: F,
        report: Option<Arc<AtomicU64>>,
    }
}

impl<F: Future> Future for CarryFuture<F> {
    type Output = F::Output;

    #[inline]
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let this = self.project();
        let out = ready!(this.inner.poll(cx));
        if let Some(report) = this.report {
            let token = report.load(Ordering::Acquire);
            if token != 0 {
                attempt::report_failed_endpoint(token);
            }
        }
        Poll::Ready(out)
    }
}

/// Puts [`Resume`] in front of a service: place it just below a task boundary, with
/// [`CarryLayer`] just above it (see the [module docs](self)).
#[derive(Clone, Copy, Debug, Default)]
pub struct ResumeLayer(());

impl ResumeLayer {
    /// The layer.
    pub fn new() -> Self {
        ResumeLayer(())
    }
}

impl<S> Layer<S> for ResumeLayer {
    type Service = Resume<S>;

    fn layer(&self, inner: S) -> Resume<S> {
        Resume { inner }
    }
}

/// Takes the context a [`Carry`] above put in the request and sets it again around the call
/// and every poll of the call's future; see the [module docs](self).
///
/// The call and its polls see the carried context and nothing else: whatever context the
/// thread has where they run (the caller's, behind a `Buffer`; another request's, on a
/// `LocalSet` driven from a handler) is set aside ([`isolated`]), so a
/// request that carries nothing runs with no context at all.
///
/// When it runs inside an attempt scope that is not the one its request carries, a retry layer
/// sits between the pair: it warns once per process (`tracing`), since the layers below would
/// see the attempt [`Carry`] captured above that retry.
///
/// # Panics
/// `Resume` reserves nothing in `poll_ready`: `poll_ready`, `call` and polls of its response
/// future after completion are forwarded to the inner service and future, whose own contract
/// applies.
#[derive(Clone, Debug)]
pub struct Resume<S> {
    inner: S,
}

impl<S> Resume<S> {
    /// Wraps `inner`.
    pub fn new(inner: S) -> Self {
        Resume { inner }
    }

    /// The inner service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// Unwraps the inner service.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl Carried {
    /// Runs `f` inside the carried deadline and attempt scopes, then passes back to the side
    /// above (through the report cell) an endpoint the side below reported failing in `f`.
    fn run<R>(&mut self, f: impl FnOnce() -> R) -> R {
        let mut scope = self.attempt;
        let out = match (self.deadline, &mut scope) {
            (Some(at), Some(state)) => with_deadline(at, || attempt::scope(state, f)),
            (Some(at), None) => with_deadline(at, f),
            (None, Some(state)) => attempt::scope(state, f),
            (None, None) => f(),
        };
        let (Some(before), Some(after), Some(report)) = (self.attempt, scope, &self.report) else {
            return out;
        };
        if after.avoid != before.avoid {
            if let Some(token) = after.avoid {
                report.store(token, Ordering::Release);
            }
            self.attempt = Some(after);
        }
        out
    }
}

impl<S, Req> Service<Req> for Resume<S>
where
    S: Service<Req>,
    Req: Carrier,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = ResumeFuture<S::Future>;

    #[inline]
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Req) -> Self::Future {
        let carried = req.take_context();
        check_position(carried.as_ref());
        let inner = &mut self.inner;
        let Some(mut carried) = carried else {
            return ResumeFuture {
                inner: isolated(|| inner.call(req)),
                carried: None,
            };
        };
        let timeouts = carried.timeouts;
        let future = isolated(|| {
            carried.run(|| attempt::with_timeouts_so_far(timeouts, || inner.call(req)))
        });
        ResumeFuture {
            inner: future,
            carried: Some(carried),
        }
    }
}

pin_project! {
    /// The response future of [`Resume`]: polls the call inside the carried context.
    #[derive(Debug)]
    pub struct ResumeFuture<F> {
        #[pin]
        inner: F,
        carried: Option<Carried>,
    }
}

impl<F: Future> Future for ResumeFuture<F> {
    type Output = F::Output;

    #[inline]
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let this = self.project();
        check_position(this.carried.as_ref());
        let inner = this.inner;
        match this.carried {
            Some(carried) => isolated(|| carried.run(|| inner.poll(cx))),
            None => isolated(|| inner.poll(cx)),
        }
    }
}

/// Set once the misplaced-pair warning was logged: once per process.
static MISPLACED_WARNED: AtomicBool = AtomicBool::new(false);

#[cfg(test)]
thread_local! {
    /// How often this thread saw a misplaced pair (the warning itself is once per process).
    static MISPLACED_SEEN: std::cell::Cell<u32> = const { std::cell::Cell::new(0) };
}

/// A [`Resume`] that runs inside an attempt scope other than the one its request carries has a
/// retry layer between it and its [`Carry`] (or runs inside another request's poll): warns
/// once per process, since the layers below see the carried attempt, not that retry's.
#[inline]
fn check_position(carried: Option<&Carried>) {
    let Some(here) = attempt::current() else {
        return;
    };
    if carried.and_then(|c| c.attempt).map(|a| a.number) != Some(here.number) {
        misplaced();
    }
}

#[cold]
fn misplaced() {
    #[cfg(test)]
    MISPLACED_SEEN.with(|n| n.set(n.get() + 1));
    warn_misplaced_once(&MISPLACED_WARNED);
}

/// Logs the misplaced-pair warning unless `warned` says it was logged; whether it logged.
fn warn_misplaced_once(warned: &AtomicBool) -> bool {
    let first = !warned.swap(true, Ordering::Relaxed);
    if first {
        tracing::warn!(
            "palisade's ResumeLayer ran inside an attempt scope other than the one its request \
             carries: a retry layer sits between CarryLayer and ResumeLayer (or the Resume runs \
             inside another request's poll, such as a LocalSet driven from a handler). The \
             layers below see the attempt CarryLayer captured, not that retry's, so they count \
             and route its retries wrongly. Fix: put CarryLayer just above the task boundary, \
             below every retry (warned once per process)"
        );
    }
    first
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;
    use std::time::Duration;

    use super::*;

    struct Req(Option<Carried>);

    impl Carrier for Req {
        fn carry_context(&mut self, context: Carried) {
            self.0 = Some(context);
        }
        fn take_context(&mut self) -> Option<Carried> {
            self.0.take()
        }
    }

    /// What the service below saw in its call and in its future's polls.
    #[derive(Clone, Copy, Debug, Default, PartialEq)]
    struct Seen {
        deadline: Option<Instant>,
        attempt: Option<Attempt>,
        timeouts: u32,
    }

    fn seen() -> Seen {
        Seen {
            deadline: deadline(),
            attempt: attempt::current(),
            timeouts: attempt::timeouts_so_far(),
        }
    }

    /// A service that records what it sees, reports `report` failing from its future, and
    /// answers whether the request still carried anything.
    #[derive(Clone)]
    struct Below {
        report: u64,
    }

    impl Service<Req> for Below {
        type Response = (Seen, Seen, bool);
        type Error = Infallible;
        type Future = Pin<Box<dyn Future<Output = Result<(Seen, Seen, bool), Infallible>> + Send>>;

        fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
            Poll::Ready(Ok(()))
        }

        fn call(&mut self, req: Req) -> Self::Future {
            let at_call = seen();
            let left = req.0.is_some();
            let report = self.report;
            Box::pin(async move {
                tokio::task::yield_now().await;
                let at_poll = seen();
                if report != 0 {
                    attempt::report_failed_endpoint(report);
                }
                Ok((at_call, at_poll, left))
            })
        }
    }

    /// Carry, then a boundary that runs the rest on a task of its own, then Resume.
    fn across_a_task(
        report: u64,
    ) -> Carry<impl Service<Req, Response = (Seen, Seen, bool), Error = Infallible>> {
        let below = Resume::new(Below { report });
        let boundary = tower::service_fn(move |req: Req| {
            let mut below = below.clone();
            async move {
                let call = below.call(req);
                Ok::<_, Infallible>(tokio::spawn(call).await.unwrap().unwrap())
            }
        });
        Carry::new(boundary)
    }

    async fn drive<F: Future>(state: &mut Attempt, future: F) -> F::Output {
        let mut future = std::pin::pin!(future);
        std::future::poll_fn(|cx| attempt::scope(state, || future.as_mut().poll(cx))).await
    }

    /// Polls `future` to its end inside a deadline at `at` and the attempt `state`: another
    /// request's scopes, as far as the future is concerned.
    async fn drive_inside<F: Future>(at: Instant, state: &mut Attempt, future: F) -> F::Output {
        let mut future = std::pin::pin!(future);
        std::future::poll_fn(|cx| {
            with_deadline(at, || attempt::scope(state, || future.as_mut().poll(cx)))
        })
        .await
    }

    #[tokio::test(start_paused = true)]
    async fn the_context_crosses_a_spawned_task_both_ways() {
        let at = Instant::now() + Duration::from_secs(3);
        let mut svc = across_a_task(9);
        let mut state = Attempt {
            number: 3,
            avoid: Some(4),
        };
        let call = with_deadline(at, || {
            attempt::scope(&mut state, || {
                attempt::with_timeouts_so_far(2, || svc.call(Req(None)))
            })
        });
        let (at_call, at_poll, left) = drive(&mut state, call).await.unwrap();
        let expected = Seen {
            deadline: Some(at),
            attempt: Some(Attempt {
                number: 3,
                avoid: Some(4),
            }),
            timeouts: 2,
        };
        assert_eq!(at_call, expected);
        // The polls see the deadline and the attempt (escalation is read at call time only).
        assert_eq!(
            at_poll,
            Seen {
                timeouts: 0,
                ..expected
            }
        );
        assert!(!left, "Resume takes the context out of the request");
        assert_eq!(state.avoid, Some(9), "the report below crossed back up");
    }

    #[tokio::test(start_paused = true)]
    async fn without_the_pair_nothing_crosses() {
        let mut below = Below { report: 9 };
        let boundary = tower::service_fn(move |req: Req| {
            let call = below.call(req);
            async move { Ok::<_, Infallible>(tokio::spawn(call).await.unwrap().unwrap()) }
        });
        let mut svc = boundary;
        let mut state = Attempt {
            number: 1,
            avoid: None,
        };
        let call = attempt::scope(&mut state, || svc.call(Req(None)));
        let (_, at_poll, _) = drive(&mut state, call).await.unwrap();
        assert_eq!(at_poll, Seen::default());
        assert_eq!(state.avoid, None);
    }

    #[tokio::test(start_paused = true)]
    async fn no_context_carries_nothing_and_reports_nothing() {
        let mut svc = across_a_task(9);
        let (at_call, at_poll, left) = svc.call(Req(None)).await.unwrap();
        assert_eq!(
            (at_call, at_poll, left),
            (Seen::default(), Seen::default(), false)
        );
        assert_eq!(attempt::current(), None);
    }

    #[tokio::test(start_paused = true)]
    async fn a_deadline_alone_crosses_without_a_report_channel() {
        let at = Instant::now() + Duration::from_secs(1);
        let mut svc = across_a_task(9);
        let call = with_deadline(at, || svc.call(Req(None)));
        let (at_call, at_poll, _) = call.await.unwrap();
        assert_eq!(at_call.deadline, Some(at));
        assert_eq!(at_poll.deadline, Some(at));
        assert_eq!(at_poll.attempt, None);
        let carried = with_deadline(at, Carried::capture).unwrap();
        assert!(carried.report.is_none());
        assert_eq!(
            (
                carried.deadline(),
                carried.attempt(),
                carried.timeouts_so_far()
            ),
            (Some(at), None, 0)
        );
    }

    #[tokio::test(start_paused = true)]
    async fn an_unchanged_avoid_is_not_reported_again() {
        let mut svc = across_a_task(0);
        let mut state = Attempt {
            number: 2,
            avoid: Some(5),
        };
        let call = attempt::scope(&mut state, || svc.call(Req(None)));
        let mut state_after = Attempt {
            number: 2,
            avoid: None,
        };
        // Polled under a scope whose avoid was cleared: nothing reported below, nothing set.
        drive(&mut state_after, call).await.unwrap();
        assert_eq!(state_after.avoid, None);
    }

    /// The request's own context and nothing of the thread's: a `Resume` polled inside another
    /// request's scopes (a `LocalSet` driven from a handler, the caller's task behind a
    /// `Buffer`) sets them aside.
    #[tokio::test(start_paused = true)]
    async fn resume_sets_the_threads_context_aside() {
        let outer_deadline = Instant::now() + Duration::from_secs(1);
        let carried_deadline = Instant::now() + Duration::from_secs(9);
        let mut outer = Attempt {
            number: 4,
            avoid: None,
        };
        // A request that carries nothing, called and polled inside another request's scopes.
        let mut bare = Resume::new(Below { report: 6 });
        let call = with_deadline(outer_deadline, || {
            attempt::scope(&mut outer, || {
                attempt::with_timeouts_so_far(3, || bare.call(Req(None)))
            })
        });
        let (at_call, at_poll, _) = drive_inside(outer_deadline, &mut outer, call)
            .await
            .unwrap();
        assert_eq!((at_call, at_poll), (Seen::default(), Seen::default()));
        assert_eq!(
            outer.avoid, None,
            "a report below does not reach the other request"
        );

        // A request that carries a later deadline and its own attempt: it sees exactly those.
        let mut own = Attempt {
            number: 1,
            avoid: None,
        };
        let carried = with_deadline(carried_deadline, || {
            attempt::scope(&mut own, Carried::capture)
        });
        let mut svc = Resume::new(Below { report: 0 });
        let call = with_deadline(outer_deadline, || {
            attempt::scope(&mut outer, || svc.call(Req(carried)))
        });
        let (at_call, at_poll, _) = drive_inside(outer_deadline, &mut outer, call)
            .await
            .unwrap();
        let expected = Seen {
            deadline: Some(carried_deadline),
            attempt: Some(own),
            timeouts: 0,
        };
        assert_eq!((at_call, at_poll), (expected, expected));
        // The thread's scopes are back afterwards.
        assert_eq!((deadline(), attempt::current()), (None, None));
    }

    /// The tasks of a `LocalSet` driven from inside a request run inside that request's poll.
    #[tokio::test(start_paused = true)]
    async fn a_local_set_driven_from_a_request_does_not_leak_its_context() {
        let at = Instant::now() + Duration::from_secs(2);
        let mut state = Attempt {
            number: 2,
            avoid: None,
        };
        let request = async {
            let local = tokio::task::LocalSet::new();
            local
                .run_until(async {
                    let mut svc = Resume::new(Below { report: 8 });
                    tokio::task::spawn_local(async move { svc.call(Req(None)).await })
                        .await
                        .unwrap()
                })
                .await
        };
        let (at_call, at_poll, _) = drive_inside(at, &mut state, request).await.unwrap();
        assert_eq!((at_call, at_poll), (Seen::default(), Seen::default()));
        assert_eq!(state.avoid, None);
    }

    /// A retry's scope between `Carry` and `Resume` is told apart from a well-placed pair.
    #[tokio::test(start_paused = true)]
    async fn a_retry_between_the_pair_is_noticed() {
        MISPLACED_SEEN.set(0);
        // Well placed: the retry above Carry; its scope is the one carried.
        let mut svc = across_a_task(0);
        let mut state = Attempt {
            number: 2,
            avoid: None,
        };
        let call = attempt::scope(&mut state, || svc.call(Req(None)));
        drive(&mut state, call).await.unwrap();
        // No context at all, and a request carrying none outside any scope: nothing to notice.
        across_a_task(0).call(Req(None)).await.unwrap();
        assert_eq!(MISPLACED_SEEN.get(), 0);

        // Misplaced: Carry captured attempt 1 above, a retry below it is on attempt 3.
        let mut first = Attempt {
            number: 1,
            avoid: None,
        };
        let carried = attempt::scope(&mut first, Carried::capture);
        let mut resume = Resume::new(Below { report: 0 });
        let mut retry = Attempt {
            number: 3,
            avoid: None,
        };
        let call = attempt::scope(&mut retry, || resume.call(Req(carried)));
        drive(&mut retry, call).await.unwrap();
        assert!(
            MISPLACED_SEEN.get() >= 2,
            "seen at the call and at the polls"
        );

        // Carry above every retry captured nothing: a retry's scope below still shows.
        MISPLACED_SEEN.set(0);
        let call = attempt::scope(&mut retry, || resume.call(Req(None)));
        drive(&mut retry, call).await.unwrap();
        assert!(MISPLACED_SEEN.get() >= 1);

        // The warning itself: once per flag.
        let warned = AtomicBool::new(false);
        assert!(warn_misplaced_once(&warned));
        assert!(!warn_misplaced_once(&warned));
        assert!(warned.load(Ordering::Relaxed));
    }

    /// A request that still holds a context from an earlier hop, sent through a Carry where
    /// there is no context: the Resume below runs the call with none, not under the stale
    /// deadline and attempt.
    #[tokio::test(start_paused = true)]
    async fn a_stale_context_in_the_request_is_not_resumed() {
        let stale_deadline = Instant::now() + Duration::from_millis(1);
        let mut old = Attempt {
            number: 7,
            avoid: Some(3),
        };
        let stale = with_deadline(stale_deadline, || {
            attempt::scope(&mut old, Carried::capture)
        });
        assert!(stale.is_some());
        let mut svc = across_a_task(0);
        let (at_call, _, _) = svc.call(Req(stale)).await.unwrap();
        assert_eq!(at_call, Seen::default());
    }

    #[cfg(feature = "http")]
    #[test]
    fn http_requests_carry_it_in_their_extensions() {
        let mut req = http::Request::new(());
        assert!(req.take_context().is_none());
        let mut state = Attempt {
            number: 1,
            avoid: None,
        };
        let carried = attempt::scope(&mut state, Carried::capture).unwrap();
        req.carry_context(carried);
        let back = req.take_context().unwrap();
        assert_eq!(back.attempt().map(|a| a.number), Some(1));
        assert!(req.take_context().is_none());
    }
}
