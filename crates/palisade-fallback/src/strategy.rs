//! Fallback strategies: where a degraded answer comes from.

use std::fmt;
use std::future::Future;
use std::hash::{BuildHasher, Hash};
use std::marker::PhantomData;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use palisade_core::{BoxError, Class, ConfigError};
use tokio::time::Instant;
use tower::ServiceExt;
use tower_service::Service;

use crate::recent::Recent;

/// The future a strategy returns. Strategies only run after a failure, where allocating is
/// allowed; the success path never builds one.
pub type FallbackFuture<R> = Pin<Box<dyn Future<Output = Result<R, BoxError>> + Send>>;

/// The failure a strategy answers for.
#[derive(Debug)]
pub struct Failure<'a> {
    /// Its class.
    pub class: Class,
    /// The error itself: the call's own error, also for the members of a [`Chain`], so a
    /// strategy can downcast it.
    pub error: &'a BoxError,
}

/// Where a degraded answer comes from.
pub trait Strategy<Req, R>: Send + Sync {
    /// A short name for logs, the [`Degraded`](crate::Degraded) marker and
    /// [`FallbackFailed`](crate::FallbackFailed); [`Named`] gives a strategy another.
    fn name(&self) -> &'static str;

    /// For a strategy made of others tried in order (a [`Chain`]): those strategies. The
    /// fallback layer then tries them itself, one after the other, so that each receives the
    /// call's own error, the answer names the member that gave it and an all-failed error
    /// names each member beside its failure. `None` (the default): the strategy answers by
    /// itself through [`fallback`](Self::fallback).
    fn members(&self) -> Option<&[Arc<dyn Strategy<Req, R>>]> {
        None
    }

    /// A copy of the request for [`fallback`](Self::fallback), taken before the call, when
    /// the strategy needs one: only strategies that answer from the request clone it (and only
    /// their implementations ask for `Req: Clone`). `None` (the default): the request is not
    /// kept, and the fallback layer needs nothing of the request type.
    fn keep_request(&self, _req: &Req) -> Option<Req> {
        None
    }

    /// A key taken from the request before the call, for strategies that remember answers.
    fn key(&self, _req: &Req) -> Option<u64> {
        None
    }

    /// Sees every successful response (with the key taken before the call).
    fn on_success(&self, _key: Option<u64>, _response: &R) {}

    /// Answers for a failure. `req` is the copy [`keep_request`](Self::keep_request) took, if
    /// any.
    fn fallback(
        &self,
        req: Option<Req>,
        key: Option<u64>,
        failure: Failure<'_>,
    ) -> FallbackFuture<R>;
}

/// A boxed strategy is a strategy, so strategies of different types can be chosen at run time.
impl<Req: 'static, R: 'static> Strategy<Req, R> for Box<dyn Strategy<Req, R>> {
    fn name(&self) -> &'static str {
        (**self).name()
    }

    fn members(&self) -> Option<&[Arc<dyn Strategy<Req, R>>]> {
        (**self).members()
    }

    fn keep_request(&self, req: &Req) -> Option<Req> {
        (**self).keep_request(req)
    }

    fn key(&self, req: &Req) -> Option<u64> {
        (**self).key(req)
    }

    fn on_success(&self, key: Option<u64>, response: &R) {
        (**self).on_success(key, response)
    }

    fn fallback(
        &self,
        req: Option<Req>,
        key: Option<u64>,
        failure: Failure<'_>,
    ) -> FallbackFuture<R> {
        (**self).fallback(req, key, failure)
    }
}

/// A strategy under another name, for logs, the [`Degraded`](crate::Degraded) marker and
/// [`FallbackFailed`](crate::FallbackFailed): two [`Alternative`]s in a chain are otherwise
/// both `"service"`.
///
/// ```
/// use palisade_core::BoxError;
/// use palisade_fallback::{Alternative, Chain, Constant, Named};
/// use tower::service_fn;
///
/// let small_model = service_fn(|q: String| async move { Ok::<_, BoxError>(format!("short: {q}")) });
/// let other_provider = service_fn(|q: String| async move { Ok::<_, BoxError>(format!("other: {q}")) });
/// let chain = Chain::new()
///     .then(Named("small_model", Alternative::new(small_model)))
///     .then(Named("other_provider", Alternative::new(other_provider)))
///     .then(Constant("Sorry, try again later.".to_owned()));
/// # let _ = chain;
/// ```
///
/// A named [`Chain`] keeps its name for logs only: its members answer, and fail, under their
/// own names.
#[derive(Clone, Debug)]
pub struct Named<St>(pub &'static str, pub St);

impl<Req, R, St: Strategy<Req, R>> Strategy<Req, R> for Named<St> {
    fn name(&self) -> &'static str {
        self.0
    }

    fn members(&self) -> Option<&[Arc<dyn Strategy<Req, R>>]> {
        self.1.members()
    }

    fn keep_request(&self, req: &Req) -> Option<Req> {
        self.1.keep_request(req)
    }

    fn key(&self, req: &Req) -> Option<u64> {
        self.1.key(req)
    }

    fn on_success(&self, key: Option<u64>, response: &R) {
        self.1.on_success(key, response)
    }

    fn fallback(
        &self,
        req: Option<Req>,
        key: Option<u64>,
        failure: Failure<'_>,
    ) -> FallbackFuture<R> {
        self.1.fallback(req, key, failure)
    }
}

/// Always the same answer, cloned from one shared value (so `R: Clone + Sync`); named
/// `"constant"`.
///
/// For a response that is neither (an axum or hyper `Response`), build the answer per call
/// with [`FromError`], the closure's arguments typed (`|_: Class, _: &BoxError|`: untyped,
/// the closure would not take the error for any lifetime, and the strategy would not build):
///
/// ```
/// use std::cell::Cell;
///
/// use palisade_core::{BoxError, Class};
/// use palisade_fallback::{FallbackLayer, FromError};
/// use tower::{Layer, ServiceExt, service_fn};
///
/// /// A response that is neither `Clone` nor `Sync`, as an axum or hyper one.
/// struct Response {
///     body: String,
///     _not_sync: Cell<()>,
/// }
///
/// impl Response {
///     fn new(body: &str) -> Self {
///         Response { body: body.to_owned(), _not_sync: Cell::new(()) }
///     }
/// }
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let page = service_fn(|_: ()| async { Err::<Response, BoxError>("503 overloaded".into()) });
/// let svc = FallbackLayer::new(FromError(|_: Class, _: &BoxError| {
///     Ok(Response::new("try again later"))
/// }))
/// .layer(page);
/// let answer = svc.oneshot(()).await.unwrap();
/// assert_eq!(answer.into_inner().body, "try again later");
/// # }
/// ```
#[derive(Clone, Debug)]
pub struct Constant<R>(pub R);

impl<Req, R: Clone + Send + Sync + 'static> Strategy<Req, R> for Constant<R> {
    fn name(&self) -> &'static str {
        "constant"
    }

    fn fallback(&self, _: Option<Req>, _: Option<u64>, _: Failure<'_>) -> FallbackFuture<R> {
        Box::pin(std::future::ready(Ok(self.0.clone())))
    }
}

/// An answer computed from the failure (its class and error).
#[derive(Clone)]
pub struct FromError<F>(pub F);

impl<F> fmt::Debug for FromError<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("FromError")
    }
}

impl<Req, R, F> Strategy<Req, R> for FromError<F>
where
    R: Send + 'static,
    F: Fn(Class, &BoxError) -> Result<R, BoxError> + Send + Sync + 'static,
{
    fn name(&self) -> &'static str {
        "from_error"
    }

    fn fallback(&self, _: Option<Req>, _: Option<u64>, failure: Failure<'_>) -> FallbackFuture<R> {
        Box::pin(std::future::ready((self.0)(failure.class, failure.error)))
    }
}

/// An answer computed from the request and the failure: the request is cloned before every
/// call so it is there if the call fails.
#[derive(Clone)]
pub struct FromRequest<F>(pub F);

impl<F> fmt::Debug for FromRequest<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("FromRequest")
    }
}

impl<Req, R, F> Strategy<Req, R> for FromRequest<F>
where
    Req: Clone + Send + 'static,
    R: Send + 'static,
    F: Fn(Req, Class, &BoxError) -> Result<R, BoxError> + Send + Sync + 'static,
{
    fn name(&self) -> &'static str {
        "from_request"
    }

    fn keep_request(&self, req: &Req) -> Option<Req> {
        Some(req.clone())
    }

    fn fallback(
        &self,
        req: Option<Req>,
        _: Option<u64>,
        failure: Failure<'_>,
    ) -> FallbackFuture<R> {
        Box::pin(std::future::ready(match req {
            Some(req) => (self.0)(req, failure.class, failure.error),
            None => Err("from_request fallback without a request".into()),
        }))
    }
}

/// Another service answers: a fallback agent, a cheaper model, another provider.
///
/// The service only needs to be `Clone + Send` (tower's `BoxCloneService` is not `Sync`): it is
/// kept behind a mutex that is taken only on the failure path, to clone it for one answer.
/// The request is cloned before every call, so it is there if the call fails.
pub struct Alternative<S>(Mutex<S>);

impl<S> Alternative<S> {
    /// Answers failures with `service`.
    pub fn new(service: S) -> Self {
        Alternative(Mutex::new(service))
    }

    fn service(&self) -> S
    where
        S: Clone,
    {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

impl<S: Clone> Clone for Alternative<S> {
    fn clone(&self) -> Self {
        Alternative::new(self.service())
    }
}

impl<S> fmt::Debug for Alternative<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Alternative")
            .field(&std::any::type_name::<S>())
            .finish()
    }
}

impl<Req, R, S> Strategy<Req, R> for Alternative<S>
where
    Req: Clone + Send + 'static,
    S: Service<Req, Response = R> + Clone + Send + 'static,
    S::Error: Into<BoxError>,
    S::Future: Send + 'static,
{
    fn name(&self) -> &'static str {
        "service"
    }

    fn keep_request(&self, req: &Req) -> Option<Req> {
        Some(req.clone())
    }

    fn fallback(&self, req: Option<Req>, _: Option<u64>, _: Failure<'_>) -> FallbackFuture<R> {
        let svc = self.service();
        Box::pin(async move {
            match req {
                Some(req) => svc.oneshot(req).await.map_err(Into::into),
                None => Err("service fallback without a request".into()),
            }
        })
    }
}

/// The last good response for the same key, if it is fresh enough.
///
/// The key comes from the request before each call (a hash of what `key` returns). Recording a
/// success takes a short lock on the cache (the only lock on the success path, and only with
/// this strategy), shared by every clone of the service.
///
/// # Capacity and expiry
/// The cache holds at most `capacity` keys, in the order their answers were stored: storing an
/// answer for a key makes it the newest, and a new key in a full cache evicts the entry stored
/// longest ago (the least recently stored; answers stored at one instant go in the order they
/// were stored). Recording a success, evicting and finding an answer each cost the same
/// whatever the cache holds: a hash lookup and a few links, no scan. An answer is given while
/// it is younger than `ttl`; each recorded success also drops up to two expired answers from
/// the oldest end, so stale answers do not stay in memory while new ones come in.
///
/// An answer is stored, and its age counted, when its call completes: of two calls for one key
/// that overlap, the one that completes last is kept, even if it was sent first (reading the
/// clock as each call starts would cost every call of every strategy a clock read). Where the
/// data's own age matters, carry it in the response.
pub struct LastGood<R, F> {
    key: F,
    ttl: Duration,
    capacity: usize,
    hasher: std::collections::hash_map::RandomState,
    cache: Arc<Mutex<Recent<R>>>,
}

impl<R, F> fmt::Debug for LastGood<R, F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LastGood")
            .field("ttl", &self.ttl)
            .field("capacity", &self.capacity)
            .finish_non_exhaustive()
    }
}

/// How long a [`LastGood`] answer stays fresh unless set otherwise.
const DEFAULT_TTL: Duration = Duration::from_secs(60);

/// How many keys a [`LastGood`] cache holds unless set otherwise.
const DEFAULT_CAPACITY: usize = 1024;

impl<R, F> LastGood<R, F> {
    /// Remembers the last good response per `key(&request)`, with the defaults: an answer
    /// stays fresh for 60 s, and the cache holds at most 1024 keys.
    /// [`builder`](Self::builder) changes either.
    pub fn new(key: F) -> Self {
        Self::with(key, DEFAULT_TTL, DEFAULT_CAPACITY)
    }

    /// A last-good strategy keyed by `key(&request)`, with a setter per option; the defaults
    /// are [`new`](Self::new)'s.
    pub fn builder(key: F) -> LastGoodBuilder<R, F> {
        LastGoodBuilder {
            key,
            ttl: DEFAULT_TTL,
            capacity: DEFAULT_CAPACITY,
            response: PhantomData,
        }
    }

    fn with(key: F, ttl: Duration, capacity: usize) -> Self {
        LastGood {
            key,
            ttl,
            capacity,
            hasher: Default::default(),
            cache: Arc::new(Mutex::new(Recent::new(capacity))),
        }
    }
}

/// Builds a [`LastGood`] strategy; made by [`LastGood::builder`].
pub struct LastGoodBuilder<R, F> {
    key: F,
    ttl: Duration,
    capacity: usize,
    response: PhantomData<fn() -> R>,
}

impl<R, F> fmt::Debug for LastGoodBuilder<R, F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LastGoodBuilder")
            .field("ttl", &self.ttl)
            .field("capacity", &self.capacity)
            .finish_non_exhaustive()
    }
}

impl<R, F> LastGoodBuilder<R, F> {
    /// How long a remembered answer stays fresh (default 60 s); an older one is not given.
    pub fn ttl(mut self, ttl: Duration) -> Self {
        self.ttl = ttl;
        self
    }

    /// How many keys the cache holds at most (default 1024); when full, a new key replaces
    /// the entry stored longest ago.
    pub fn capacity(mut self, capacity: usize) -> Self {
        self.capacity = capacity;
        self
    }

    /// The strategy.
    ///
    /// # Errors
    /// `ttl` must be greater than zero and `capacity` at least 1.
    pub fn build(self) -> Result<LastGood<R, F>, ConfigError> {
        if self.ttl.is_zero() {
            return Err(ConfigError::new("ttl", "must be greater than zero"));
        }
        if self.capacity == 0 {
            return Err(ConfigError::new("capacity", "must be at least 1"));
        }
        Ok(LastGood::with(self.key, self.ttl, self.capacity))
    }
}

impl<Req, R, F, K> Strategy<Req, R> for LastGood<R, F>
where
    R: Clone + Send + Sync + 'static,
    F: Fn(&Req) -> K + Send + Sync + 'static,
    K: Hash,
{
    fn name(&self) -> &'static str {
        "last_good"
    }

    fn key(&self, req: &Req) -> Option<u64> {
        Some(self.hasher.hash_one((self.key)(req)))
    }

    fn on_success(&self, key: Option<u64>, response: &R) {
        let Some(key) = key else { return };
        let response = response.clone();
        let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        // Read under the lock, so the cache's order of storing is also the order of time.
        let now = Instant::now();
        cache.store(key, response, now, self.ttl);
    }

    fn fallback(&self, _: Option<Req>, key: Option<u64>, _: Failure<'_>) -> FallbackFuture<R> {
        let found = key.and_then(|key| {
            let cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
            cache
                .get(key, Instant::now(), self.ttl)
                .map(|(r, age)| (r.clone(), age))
        });
        let found = found.map(|(r, age)| {
            tracing::debug!(target: "palisade_fallback", age_ms = age.as_millis() as u64, "last good answer found");
            r
        });
        Box::pin(std::future::ready(found.ok_or_else(|| {
            BoxError::from("no fresh last good response for this key")
        })))
    }
}

/// Tries strategies in order until one answers; when none does, the call fails with
/// [`FallbackFailed`](crate::FallbackFailed), which names each member beside its failure.
///
/// Under a fallback layer, every member receives the call's own error (a [`FromError`] can
/// downcast it), and the answer's [`Degraded`](crate::Degraded) marker names the member that
/// answered, not the chain. The request is kept before the call if a member answers from it,
/// and each member that does takes its own copy of it when its turn comes (on the failure
/// path only); the first member that takes a key gives it to all, and every member sees every
/// success. A chain added to a chain adds its members.
///
/// Tried directly through [`Strategy::fallback`], outside a fallback layer, a chain runs its
/// members itself; the error it is given is borrowed only for that call, so the members see
/// it as text there, and their failures come back as one error that lists them.
///
/// A chain with no members answers nothing: under a fallback layer, each failure it is given
/// fails with [`FallbackFailed`](crate::FallbackFailed) listing no member, counted in
/// `palisade.fallback.failed` as when every member fails, and the layer warns of the empty
/// chain once, at the first such failure. (The layer's builder cannot refuse it sooner: it
/// knows nothing of the requests a chain is a strategy for.)
pub struct Chain<Req, R> {
    members: Vec<Arc<dyn Strategy<Req, R>>>,
}

impl<Req: 'static, R: 'static> fmt::Debug for Chain<Req, R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list()
            .entries(self.members.iter().map(|m| m.name()))
            .finish()
    }
}

impl<Req, R> Default for Chain<Req, R> {
    fn default() -> Self {
        Chain {
            members: Vec::new(),
        }
    }
}

impl<Req, R> Chain<Req, R> {
    /// An empty chain.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a strategy to try after the ones already there (a chain's members, for a chain).
    pub fn then(mut self, strategy: impl Strategy<Req, R> + 'static) -> Self {
        match strategy.members() {
            Some(members) => self.members.extend(members.iter().cloned()),
            None => self.members.push(Arc::new(strategy)),
        }
        self
    }
}

/// What a chain's members failed with when the chain ran them itself, each beside its name.
#[derive(Debug)]
pub(crate) struct ChainErrors(pub(crate) Vec<(&'static str, BoxError)>);

impl fmt::Display for ChainErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} fallback strategies failed", self.0.len())?;
        for (i, (name, e)) in self.0.iter().enumerate() {
            write!(f, "{} {name}: {e}", if i == 0 { ":" } else { ";" })?;
        }
        Ok(())
    }
}

impl std::error::Error for ChainErrors {}

/// A chain asks nothing of the request but `Send`: it never clones it itself. The members
/// that answer from it ([`FromRequest`], [`Alternative`]) ask for `Req: Clone`, and each takes
/// its own copy through its [`keep_request`](Strategy::keep_request).
impl<Req, R> Strategy<Req, R> for Chain<Req, R>
where
    Req: Send + 'static,
    R: Send + 'static,
{
    fn name(&self) -> &'static str {
        "chain"
    }

    fn members(&self) -> Option<&[Arc<dyn Strategy<Req, R>>]> {
        Some(&self.members)
    }

    /// The copy of the first member that keeps one; each member that answers from the
    /// request then takes its own copy of it, on the failure path.
    fn keep_request(&self, req: &Req) -> Option<Req> {
        self.members.iter().find_map(|m| m.keep_request(req))
    }

    fn key(&self, req: &Req) -> Option<u64> {
        self.members.iter().find_map(|m| m.key(req))
    }

    fn on_success(&self, key: Option<u64>, response: &R) {
        for m in &self.members {
            m.on_success(key, response);
        }
    }

    fn fallback(
        &self,
        req: Option<Req>,
        key: Option<u64>,
        failure: Failure<'_>,
    ) -> FallbackFuture<R> {
        let members = self.members.clone();
        let class = failure.class;
        // Outside a fallback layer (which runs the members itself, see `members`) the error is
        // borrowed only for this call: the members see it as text.
        let original: BoxError = failure.error.to_string().into();
        Box::pin(async move {
            let mut errors = Vec::new();
            for m in members {
                let req = req.as_ref().and_then(|r| m.keep_request(r));
                match m
                    .fallback(
                        req,
                        key,
                        Failure {
                            class,
                            error: &original,
                        },
                    )
                    .await
                {
                    Ok(r) => {
                        tracing::info!(target: "palisade_fallback", strategy = m.name(), "chain member answered");
                        return Ok(r);
                    }
                    Err(e) => {
                        // A member that failed because the caller cancelled ends the chain,
                        // as under a fallback layer: the next member does not answer it.
                        let cancelled = palisade_core::class_of(&e).category
                            == palisade_core::Category::Cancelled;
                        errors.push((m.name(), e));
                        if cancelled {
                            break;
                        }
                    }
                }
            }
            Err(Box::new(ChainErrors(errors)) as BoxError)
        })
    }
}
