//! Per-key breakers: one breaker per provider, model, tool or tenant, created on first use.
//!
//! Split like the crate: [`layer`] (the layer and its builder), [`service`] (the service),
//! [`state`] (the sharded, lock-free map of the keys' breakers and their eviction), [`handle`] (control of every key's
//! breaker). A call's future is the crate's [`ResponseFuture`](crate::future::ResponseFuture).

mod handle;
mod layer;
mod service;
mod state;
#[cfg(test)]
#[cfg(not(palisade_loom))]
mod tests;

pub use handle::KeyedHandle;
pub use layer::{KeyedBreakerBuilder, KeyedBreakerLayer};
pub use service::KeyedBreaker;
