//! [`Retry`]: the service.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use palisade_core::context::attempt::{self, Attempt};
use palisade_core::stripe::Striped;
use palisade_core::{BoxError, Category, Class};
use tower_service::Service;

use crate::adaptive::AdaptiveLimit;
use crate::attempts::{LayerLimit, MaxAttempts};
use crate::budget::{Budget, Throttled};
use crate::ctx;
use crate::future::ResponseFuture;
use crate::layer::RetryLayer;
use crate::policy::{Pacer, Policy};
use crate::rng::RngSource;

pub(crate) type RefreshFuture = Pin<Box<dyn Future<Output = Result<(), BoxError>> + Send>>;
pub(crate) type RefreshHook = Arc<dyn Fn() -> RefreshFuture + Send + Sync>;

/// Everything the clones of a layer, its services and their futures share.
pub(crate) struct Shared<B: ?Sized, A> {
    pub(crate) policy: Policy,
    pub(crate) max_attempts: u32,
    pub(crate) adaptive: Option<AdaptiveLimit>,
    pub(crate) budget: Arc<B>,
    pub(crate) rng: RngSource,
    pub(crate) refresh: Option<RefreshHook>,
    /// The dependency's name, for tracing.
    pub(crate) name: Arc<str>,
    pub(crate) attempts: A,
    /// Lets a retry the budget holds through now and then, as a probe.
    pub(crate) probe: Pacer,
    /// Lets the budget's refusals warn now and then.
    pub(crate) warning: Pacer,
}

impl<B: ?Sized, A> Shared<B, A> {
    /// The limit of a request without an override.
    #[inline]
    pub(crate) fn limit(&self) -> u32 {
        match &self.adaptive {
            Some(adaptive) => adaptive.limit(),
            None => self.max_attempts,
        }
    }

    /// Whether a breaker's refusal of an attempt may be followed by the same attempt again,
    /// waited for and uncounted (with [`wait_for_breaker`](crate::RetryBuilder::wait_for_breaker)
    /// on, under a deadline): then even a request's last attempt, or its only one, keeps a copy
    /// of the request. The deadline is read only when the option is on.
    #[inline]
    pub(crate) fn refusal_may_be_waited_for(&self) -> bool {
        self.policy.wait_for_breaker && ctx::deadline().is_some()
    }

    /// The limit of `req`, and whether a copy of it may be sent (`false` where its
    /// [`MaxAttempts`] says `Some(0)`: only the request itself can be sent).
    #[inline]
    pub(crate) fn limit_for<Req>(&self, req: &Req) -> (u32, bool)
    where
        A: MaxAttempts<Req>,
    {
        match self.attempts.max_attempts(req) {
            Some(0) => (1, false),
            Some(n) => (n, true),
            None => (self.limit(), true),
        }
    }
}

impl<B: Budget + ?Sized, A> Shared<B, A> {
    /// A request ended in success.
    #[inline]
    pub(crate) fn succeeded(&self) {
        if self.budget.counts_successes() {
            self.budget.on_success();
        }
        if let Some(adaptive) = &self.adaptive {
            adaptive.success();
        }
    }

    /// A request ended with an error of `class`.
    pub(crate) fn failed(&self, class: &Class) {
        match class.category {
            Category::Ignored => self.succeeded(),
            Category::Cancelled => {}
            _ if class.retryable => {
                if let Some(adaptive) = &self.adaptive {
                    adaptive.failure();
                }
            }
            _ => {}
        }
    }
}

impl<B: fmt::Debug + ?Sized, A: fmt::Debug> fmt::Debug for Shared<B, A> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Retry")
            .field("name", &self.name)
            .field("max_attempts", &self.max_attempts)
            .field("limit_now", &self.limit())
            .field("backoff", &self.policy.backoff)
            .field("jitter", &self.policy.jitter)
            .field("rate_limited_delay", &self.policy.rate_limited)
            .field("max_retry_after", &self.policy.max_retry_after)
            .field("wait_for_breaker", &self.policy.wait_for_breaker)
            .field("wait_for_budget", &self.policy.wait_for_budget)
            .field("min_attempt_time", &self.policy.min_attempt_time)
            .field("adaptive", &self.adaptive)
            .field("budget", &self.budget)
            .field("rng", &self.rng)
            .field("refresh", &self.refresh.is_some())
            .field("attempts", &self.attempts)
            .finish()
    }
}

/// What a response future reaches. Each thread takes its response futures' references from
/// its own stripe of it ([`Striped::local`]), so the per-call reference count never bounces
/// between cores (a single shared `Arc` costs two contended atomic operations per call).
pub(crate) struct Handle<S, B: ?Sized, A> {
    pub(crate) shared: Arc<Shared<B, A>>,
    /// The service retries go to (see [`Handle::retry_service`]).
    spare: Arc<Mutex<S>>,
}

impl<S, B: ?Sized, A> Clone for Handle<S, B, A> {
    fn clone(&self) -> Self {
        Handle {
            shared: self.shared.clone(),
            spare: self.spare.clone(),
        }
    }
}

impl<S: Clone, B: ?Sized, A> Handle<S, B, A> {
    /// A new instance of the wrapped service for the retries of one request: a clone of the
    /// spare kept when the layer wrapped it. Only a failed request gets here, so the happy path
    /// clones no service (tower's `Retry` clones the inner service on every call).
    pub(crate) fn retry_service(&self) -> S {
        self.spare
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }
}

/// The striped handles of one service (allocated when the layer wraps it), and the shared
/// state at hand for `call`.
pub(crate) struct Handles<S, B: ?Sized, A> {
    pub(crate) shared: Arc<Shared<B, A>>,
    pub(crate) stripes: Striped<Handle<S, B, A>>,
}

impl<S, B: ?Sized, A> Handles<S, B, A> {
    /// This service's handles: the layer's shared state and a spare of `inner` for retries.
    fn new(shared: Arc<Shared<B, A>>, spare: S) -> Self {
        Handles {
            stripes: Striped::new(Handle {
                shared: shared.clone(),
                spare: Arc::new(Mutex::new(spare)),
            }),
            shared,
        }
    }
}

/// Retries the inner service's failed calls as their class, the attempt limit, the budget and
/// the deadline allow. Built by [`RetryLayer`].
///
/// The first attempt goes to the wrapped service; the retries of a request go to a clone of it,
/// made only when the request first fails (from a spare clone taken when the layer wrapped the
/// service), so a call that succeeds at once clones no service.
///
/// # Panics
///
/// `Retry` reserves nothing in `poll_ready`, which is the inner service's: a `call` made
/// without a successful `poll_ready` goes to the inner service as it is, under that service's
/// own contract (tower's services, a `Buffer` or a `ConcurrencyLimit` say, panic then). The
/// retries need no such care from the caller: each waits for its own readiness.
///
/// The [response future](ResponseFuture) panics when polled again after it returned its
/// output ("polled after completion"), as tower's futures do.
pub struct Retry<S, B: ?Sized = Throttled, A = LayerLimit> {
    inner: S,
    handles: Arc<Handles<S, B, A>>,
}

impl<S: Clone> Retry<S> {
    /// Wraps `inner` with the defaults of [`RetryLayer::new`].
    pub fn new(inner: S) -> Self {
        tower_layer::Layer::layer(&RetryLayer::new(), inner)
    }
}

impl<S, B: ?Sized, A> Retry<S, B, A> {
    pub(crate) fn from_shared(inner: S, shared: Arc<Shared<B, A>>) -> Self
    where
        S: Clone,
    {
        let handles = Arc::new(Handles::new(shared, inner.clone()));
        Retry { inner, handles }
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

    /// The budget this service draws on.
    pub fn budget(&self) -> &Arc<B> {
        &self.handles.shared.budget
    }

    /// The attempt limit a request without an override gets right now.
    pub fn max_attempts(&self) -> u32 {
        self.handles.shared.limit()
    }
}

impl<S: Clone, B: ?Sized, A> Clone for Retry<S, B, A> {
    fn clone(&self) -> Self {
        Retry {
            inner: self.inner.clone(),
            handles: self.handles.clone(),
        }
    }
}

impl<S: fmt::Debug, B: fmt::Debug + ?Sized, A: fmt::Debug> fmt::Debug for Retry<S, B, A> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Retry")
            .field("inner", &self.inner)
            .field("shared", &self.handles.shared)
            .finish()
    }
}

impl<S, Req, B, A> Service<Req> for Retry<S, B, A>
where
    S: Service<Req> + Clone,
    S::Error: Into<BoxError>,
    Req: Clone,
    B: Budget + ?Sized,
    A: MaxAttempts<Req>,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = ResponseFuture<S::Future, S, Req, B, A>;

    #[inline]
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, req: Req) -> Self::Future {
        let shared = &*self.handles.shared;
        if shared.budget.counts_requests() {
            shared.budget.on_request();
        }
        let (limit, copies) = shared.limit_for(&req);
        // Keep a copy only if another attempt may follow: a retry, or, for a request of one
        // attempt, the same attempt again after a breaker's refusal, which under a deadline
        // does not count (as `send` keeps one for a last attempt), unless the request says a
        // copy of it cannot be sent. The deadline is read only for a request of one attempt
        // that may be copied: under a `Deadline` whose clock has not started, reading it
        // starts the clock, at this call rather than at the first poll.
        let retained =
            (limit > 1 || (copies && shared.refusal_may_be_waited_for())).then(|| req.clone());
        // The first attempt's call runs inside its attempt scope, as every later one does:
        // nothing is to be avoided yet, but a layer below can tell that a retry is above it,
        // and a `CarryLayer` below carries the attempt (and its report channel) across a task
        // boundary. Its polls run inside the scope too, so a router below can report the
        // endpoint that failed.
        let handle = self.handles.stripes.local().clone();
        let inner = &mut self.inner;
        let mut first = Attempt {
            number: 1,
            avoid: None,
        };
        // The response future is built inside the scope, right where the inner call returns
        // its future, so that the compiler can build it in place rather than move it.
        let future = attempt::scope(&mut first, || ctx::with_timeouts(0, || inner.call(req)));
        ResponseFuture::new(future, handle, retained, limit)
    }
}
