//! The services: [`Timeout`] and [`Deadline`].

use std::marker::PhantomData;
use std::task::{Context, Poll};
use std::time::Duration;

use palisade_core::BoxError;
use palisade_core::context::{self, attempt};
use palisade_core::metrics::Name;
use tower_service::Service;

use crate::future::{DeadlineFuture, ResponseFuture};
use crate::layer::{DEFAULT_DEADLINE_NAME, DEFAULT_TIMEOUT_NAME};
use crate::state::Limit;
use crate::timer::{OwnTimer, TimerKind};

/// Fails a call that does not finish within its per-attempt limit with
/// [`Elapsed`](crate::error::Elapsed).
///
/// # Panics
/// `Timeout` reserves nothing in `poll_ready`: it forwards `poll_ready` and `call` to the inner
/// service, whose own contract applies to a `call` without a ready `poll_ready`. Its response
/// future panics if polled after it timed out; after the inner future answered, it keeps
/// that future (and its timer, if one was armed) until it is dropped, as tower's `Timeout`
/// does, so that the happy path pays for no clean-up, and a poll after that answer polls
/// the inner future again, whose own contract applies.
///
/// `K` says how its response future keeps its timer: [`OwnTimer`] (the default) or
/// [`SharedTimer`](crate::timer::SharedTimer), made by
/// [`TimeoutLayer::share_deadline_timer`](crate::TimeoutLayer::share_deadline_timer).
#[derive(Clone, Debug)]
pub struct Timeout<S, K = OwnTimer> {
    inner: S,
    limit: Limit,
    /// The dependency's name, for the metrics of a timeout that fires: four bytes, copied into
    /// each response future.
    name: Name,
    kind: PhantomData<K>,
}

impl<S> Timeout<S> {
    /// Wraps `inner` with a per-call `timeout` (no escalation; use
    /// [`TimeoutBuilder::escalate`](crate::TimeoutBuilder::escalate) for that), named
    /// `"timeout"` in its metrics (use [`TimeoutBuilder::name`](crate::TimeoutBuilder::name)
    /// for another name).
    pub fn new(inner: S, timeout: Duration) -> Self {
        Self::with_limit(inner, Limit::new(timeout), Name::new(DEFAULT_TIMEOUT_NAME))
    }
}

impl<S, K> Timeout<S, K> {
    pub(crate) fn with_limit(inner: S, limit: Limit, name: Name) -> Self {
        Timeout {
            inner,
            limit,
            name,
            kind: PhantomData,
        }
    }

    /// The base timeout.
    pub fn timeout(&self) -> Duration {
        self.limit.base()
    }

    /// The dependency's name, as its metrics are labelled.
    pub fn name(&self) -> &str {
        self.name.as_str()
    }

    /// The inner service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The inner service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// Unwraps the inner service.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S, Req, K> Service<Req> for Timeout<S, K>
where
    S: Service<Req>,
    S::Error: Into<BoxError>,
    K: TimerKind,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = ResponseFuture<S::Future, K>;

    #[inline]
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    #[inline]
    fn call(&mut self, req: Req) -> Self::Future {
        let (nanos, unscoped) = match self.limit.escalation() {
            None => (self.limit.nanos_for_attempt(0), false),
            // No attempt around the call: either no retry above, or one across a task
            // boundary; the future tells them apart if it ever needs its timer.
            Some(_) => (
                self.limit.nanos_for_attempt(attempt::timeouts_so_far()),
                attempt::current().is_none(),
            ),
        };
        ResponseFuture::new(self.inner.call(req), nanos, unscoped, self.name)
    }
}

/// Fails a call that does not finish within its limit, counted from the first poll (see
/// [When the clock starts](crate#when-the-clock-starts)), with
/// [`DeadlineExceeded`](crate::error::DeadlineExceeded), and publishes the deadline to the
/// layers below through [`context::deadline`](crate::context::deadline).
///
/// Under an enclosing deadline that ends first (an outer `Deadline` on the same task, or one
/// carried across a task boundary by `palisade_core::context::carry`), it fails the call then:
/// an inner, longer deadline never extends an outer one.
///
/// # Panics
/// `Deadline` reserves nothing in `poll_ready`: it forwards `poll_ready` and `call` to the inner
/// service, whose own contract applies to a `call` without a ready `poll_ready`. Its response
/// future panics if polled after it completed, as tower's futures do.
#[derive(Clone, Debug)]
pub struct Deadline<S> {
    inner: S,
    limit: Duration,
    /// The dependency's name, for the metrics of a deadline that expires: four bytes, copied
    /// into each response future.
    name: Name,
}

impl<S> Deadline<S> {
    /// Wraps `inner`, granting each call `limit`, named `"deadline"` in its metrics (use
    /// [`DeadlineBuilder::name`](crate::DeadlineBuilder::name) for another name).
    pub fn new(inner: S, limit: Duration) -> Self {
        Self::with_name(inner, limit, Name::new(DEFAULT_DEADLINE_NAME))
    }

    pub(crate) fn with_name(inner: S, limit: Duration, name: Name) -> Self {
        Deadline { inner, limit, name }
    }

    /// The time each call is granted.
    pub fn limit(&self) -> Duration {
        self.limit
    }

    /// The dependency's name, as its metrics are labelled.
    pub fn name(&self) -> &str {
        self.name.as_str()
    }

    /// The inner service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The inner service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// Unwraps the inner service.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S, Req> Service<Req> for Deadline<S>
where
    S: Service<Req>,
    S::Error: Into<BoxError>,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = DeadlineFuture<S::Future>;

    #[inline]
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    #[inline]
    fn call(&mut self, req: Req) -> Self::Future {
        // The deadline is published lazily around the call too: a layer below that reads it
        // there (a `CarryLayer` about to send the call to another task) starts the clock now;
        // otherwise nobody reads it, no clock is read, and the clock starts at the first poll.
        let mut started = None;
        let (inner, mut limit, name) = (&mut self.inner, self.limit, self.name);
        // Built inside the scope, right where the inner call returns its future, so that the
        // compiler can build the response future in place rather than move it.
        let future = context::with_lazy_deadline(&mut limit, &mut started, || inner.call(req));
        DeadlineFuture::new(future, limit, started, name)
    }
}
