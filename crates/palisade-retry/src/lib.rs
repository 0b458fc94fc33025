//! Retry for tower services (work in progress).

mod adaptive;
mod attempts;
mod backoff;
pub mod budget;
mod ctx;
pub mod future;
mod layer;
mod policy;
mod rng;
mod service;
mod sync;
#[cfg(test)]
mod tests;
mod window;

pub use adaptive::Adaptive;
pub use attempts::{LayerLimit, MaxAttempts, MaxAttemptsFn, max_attempts_fn};
pub use backoff::{Backoff, DEFAULT_CAP, Jitter};
pub use layer::{
    DEFAULT_MAX_ATTEMPTS, DEFAULT_MAX_RETRY_AFTER, DEFAULT_RATE_LIMITED_DELAY, RetryBuilder,
    RetryLayer,
};
pub use rand::rngs::SmallRng;
pub use service::Retry;
