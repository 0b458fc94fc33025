//! The per-call context that passes between palisade's layers: the deadline and the attempt.
//!
//! Apart from the [`Class`](crate::Class) of an outcome, this is all the layers of a stack tell
//! each other:
//!
//! | What | Set by | Read by |
//! |---|---|---|
//! | the deadline of the whole call: [`deadline`] | palisade-timeout's `Deadline`, around each poll of its call ([`with_lazy_deadline`]) | retry (no backoff that would end after it), a nested `Deadline` |
//! | the attempt: its number and the endpoint to avoid, [`attempt::current`] | retry, around each poll of an attempt ([`attempt::scope`]) | a router picking an endpoint, reporting one that failed ([`attempt::report_failed_endpoint`]) |
//! | how many earlier attempts timed out: [`attempt::timeouts_so_far`] | retry, around each attempt's `call` ([`attempt::with_timeouts_so_far`]) | palisade-timeout's `Timeout`, to escalate its limit |
//! | "this attempt is being dropped because its time is up": [`attempt::timing_out`] | palisade-timeout's `Timeout`, around that one drop ([`attempt::time_out`]) | a router, to count the timeout against the endpoint |
//! | one timer for the deadline and the attempts' timeouts: [`timer::share`] | palisade-timeout's `Deadline`, around each poll of its call ([`timer::with_owner`]) | a `Timeout` built to share it, which then keeps an instant instead of a timer |
//!
//! It lives in the core crate so that every layer reaches it without depending on another
//! layer's crate (retry reads the deadline without palisade-timeout).
//!
//! # Scope: one poll or call, on one thread
//!
//! Each part is a thread-local that a `with_*`/[`attempt::scope`]/[`attempt::time_out`] call
//! sets, runs a synchronous closure under (one poll, one `call`, one drop) and restores
//! afterwards, even if the closure panics. Scopes nest: nested deadlines combine to the
//! earliest, an inner attempt scope shadows the outer one. Outside any scope, [`deadline`] is
//! `None`, [`attempt::current`] is `None`, [`attempt::timeouts_so_far`] is 0 and
//! [`attempt::timing_out`] is `false`. Reading a part costs a thread-local read, and a layer
//! that does not need a part never reads it. Code that runs inside a request's poll on behalf
//! of something else (the tasks of a `LocalSet` driven from a handler) inherits that request's
//! context: run it under [`isolated`].
//!
//! The deadline is **lazy**: a `Deadline` whose clock has not started yet (its first poll)
//! publishes only its limit, and the clock is read when a layer below first asks for
//! [`deadline`] or when the inner future first returns `Pending`. A response that is ready at
//! once, with nobody asking, costs no clock read (a tokio clock read is about 30 ns on a
//! virtual machine) and no timer.
//!
//! # Task boundaries
//!
//! Because the context follows the poll on the current thread, it does not by itself reach
//! code that runs on another task:
//! - behind a `tower::buffer::Buffer`, the worker task runs `poll_ready` and `call` of the
//!   service below (the response future is still polled, and dropped, by the caller): a
//!   router there picks its endpoint without the attempt, and a timeout there reads a count of
//!   0 and does not escalate; a deadline above and a retry below still work, since both act
//!   while the future is polled;
//! - inside a spawned task, or a client whose calls run on a task of its own (tonic's
//!   `Channel` is a buffer), nothing crosses at all.
//!
//! Put [`carry::CarryLayer`] just above such a boundary and [`carry::ResumeLayer`] just below
//! it: the context travels in the request (any type that implements [`carry::Carrier`];
//! `http::Request` does with the `http` feature) and reports come back. Where the pair is
//! missing, the layers that can tell say so once at run time with a `tracing` warning: a
//! router whose call ran outside any attempt while its response is polled inside one (a
//! buffer between a retry and the router), and an escalating timeout in the same position.
//! A spawned task that drops the attempt altogether cannot be told apart from a stack with no
//! retry layer: there, only the pair helps.
//!
//! # Example
//!
//! ```
//! use std::time::Duration;
//! use palisade_core::context;
//! use tokio::time::Instant;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let now = Instant::now();
//! assert_eq!(context::deadline(), None);
//! context::with_deadline(now + Duration::from_secs(5), || {
//!     // Nested deadlines combine to the earliest.
//!     context::with_deadline(now + Duration::from_secs(9), || {
//!         assert_eq!(context::deadline(), Some(now + Duration::from_secs(5)));
//!     });
//! });
//! // A deadline whose clock starts at the first read.
//! let mut started = None;
//! let mut limit = Duration::from_secs(2);
//! let seen = context::with_lazy_deadline(&mut limit, &mut started, context::deadline);
//! assert_eq!(seen, Some(started.unwrap() + Duration::from_secs(2)));
//!
//! // The attempt, as a retry sets it and a router reads it.
//! let mut attempt = context::attempt::Attempt { number: 2, avoid: Some(7) };
//! context::attempt::scope(&mut attempt, || {
//!     assert_eq!(context::attempt::current().unwrap().avoid, Some(7));
//! });
//! assert_eq!(context::attempt::current(), None);
//! # }
//! ```

pub mod attempt;
pub mod carry;
mod deadline;
pub mod timer;

/// A current-thread runtime on tokio's paused clock, for the context's own tests.
#[cfg(test)]
fn paused_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .unwrap()
}

pub use carry::{Carried, Carrier, CarryLayer, ResumeLayer};
pub use deadline::{deadline, deadline_after, with_deadline, with_lazy_deadline};

/// Runs `f` outside every enclosing scope of this thread: no [`deadline`], no
/// [`attempt::current`], no [`attempt::timeouts_so_far`], not [`attempt::timing_out`] (unless
/// `f` sets them), and the enclosing ones back afterwards, even if `f` panics.
///
/// The context follows the poll, so code that runs *inside* a request's poll on behalf of
/// something else inherits that request's deadline and attempt: the tasks of a
/// `tokio::task::LocalSet` driven from a request's future (`local.run_until(..)` inside an
/// async handler), a hand-written executor, a cache that completes other callers' work.
/// Wrap such polls in `isolated`. [`ResumeLayer`] does: below it, a call sees the context its
/// request carried and nothing of the thread it happens to run on.
///
/// A shared [`timer`] owner needs no isolating: it serves only the polls made with its own
/// waker.
///
/// ```
/// use std::time::Duration;
/// use palisade_core::context::{self, attempt::{self, Attempt}};
/// use tokio::time::Instant;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let at = Instant::now() + Duration::from_secs(5);
/// let mut state = Attempt { number: 2, avoid: None };
/// context::with_deadline(at, || {
///     attempt::scope(&mut state, || {
///         context::isolated(|| {
///             assert_eq!(context::deadline(), None);
///             assert_eq!(attempt::current(), None);
///             attempt::report_failed_endpoint(7); // outside any attempt: goes nowhere
///         });
///         assert_eq!(context::deadline(), Some(at));
///     });
/// });
/// assert_eq!(state.avoid, None);
/// # }
/// ```
#[inline]
pub fn isolated<R>(f: impl FnOnce() -> R) -> R {
    deadline::without_deadline(|| attempt::without_attempt(f))
}
