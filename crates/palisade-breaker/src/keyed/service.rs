//! [`KeyedBreaker`]: the service a [`KeyedBreakerLayer`](super::KeyedBreakerLayer) makes.

use std::fmt;
use std::hash::Hash;
use std::sync::Arc;
use std::task::{Context, Poll};

use palisade_core::BoxError;
use tower_service::Service;

use super::state::Registry;
use crate::future::{Guard, ResponseFuture};

/// The service a [`KeyedBreakerLayer`](super::KeyedBreakerLayer) makes. Readiness is the inner service's; the key's
/// breaker decides at `call`, failing fast with [`CircuitOpen`](crate::CircuitOpen) when it is open.
///
/// # Panics
/// `KeyedBreaker` reserves nothing in `poll_ready` (the key, and so the breaker, is known only
/// at `call`): it forwards `poll_ready` and `call` to the inner service, whose own contract
/// applies to a `call` without a ready `poll_ready`. Its
/// [`ResponseFuture`](crate::future::ResponseFuture) panics if polled after it completed, as
/// tower's futures do.
pub struct KeyedBreaker<S, K, F> {
    pub(super) inner: S,
    pub(super) registry: Arc<Registry<K>>,
    pub(super) key: F,
    /// This instance's stripe in every key's breaker (see `Stripes`).
    pub(super) stripe: usize,
}

impl<S: Clone, K, F: Clone> Clone for KeyedBreaker<S, K, F> {
    fn clone(&self) -> Self {
        KeyedBreaker {
            inner: self.inner.clone(),
            registry: self.registry.clone(),
            key: self.key.clone(),
            stripe: self.registry.next_stripe(),
        }
    }
}

impl<S: fmt::Debug, K, F> fmt::Debug for KeyedBreaker<S, K, F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyedBreaker")
            .field("inner", &self.inner)
            .field("name", &self.registry.name)
            .finish_non_exhaustive()
    }
}

impl<S, K, F, Req> Service<Req> for KeyedBreaker<S, K, F>
where
    S: Service<Req>,
    S::Error: Into<BoxError>,
    K: Hash + Eq + Clone + fmt::Debug,
    F: Fn(&Req) -> K,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, req: Req) -> Self::Future {
        let stripe = self.registry.stripe(&(self.key)(&req), self.stripe);
        let shared = &stripe.shared;
        match shared.core.admit(|| shared.now_ms()) {
            Ok(ticket) => {
                // The guard first: an inner `call` that panics drops it, which gives a probe
                // slot back, as `Breaker::call` does.
                let guard = Guard::reserve(stripe, ticket);
                ResponseFuture::admitted(self.inner.call(req), guard)
            }
            Err(refused) => ResponseFuture::rejected(refused),
        }
    }
}
