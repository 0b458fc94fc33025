//! The core of palisade: the verdict every layer reads, and the pieces they share.
//!
//! This crate holds what every other palisade crate builds on: outcome classification (this
//! page), the per-request [`context`] that carries it between layers, the shared
//! [`ConfigError`], server hints from headers ([`hint`]), error statistics ([`ErrorStats`]), the
//! lock-free bucket ring ([`window`]), and the striping ([`stripe`]) and loom-aware atomics
//! and padding ([`sync`]) the layers' hot paths use. It was called `palisade-classify` until the infrastructure moved in; the
//! name now says what it is.
//!
//! Every outcome of a call is classified exactly once, by [`ClassifyLayer`], the layer closest
//! to the endpoint. A success passes through untouched. A failure leaves the layer as a
//! [`BoxError`] that carries its [`Class`]: what went wrong ([`Category`]), how bad it is
//! ([`Severity`]), whether a retry may help, and how long the server asked the caller to wait.
//! Retry, breaker, route and fallback above it read the class with [`class_of`] instead of
//! classifying again.
//!
//! From the class follow the [`FaultLevel`] (L1 transient: retry with backoff; L2 resource:
//! clean up and back off hard; L3 logic: do not retry, compensate or escalate) and whether the
//! outcome counts against the endpoint's health ([`Class::counts_against_health`],
//! [`HealthImpact`]).
//!
//! # Example
//!
//! ```
//! use palisade_core::{class_of, classify_fn, BoxError, Category, Class, ClassifyLayer,
//!     DefaultClassifier, FailedResponse};
//! use tower::{Service, ServiceBuilder, ServiceExt, service_fn};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! // A flaky agent: answers with a status code, sometimes fails outright.
//! let agent = service_fn(|prompt: &'static str| async move {
//!     match prompt {
//!         "hello" => Ok::<u16, BoxError>(200),
//!         "busy" => Ok(429),
//!         _ => Err("connection reset by peer".into()),
//!     }
//! });
//!
//! let defaults = DefaultClassifier::default();
//! let classifier = classify_fn(move |r: &Result<u16, BoxError>| match r {
//!     Ok(429) => Some(Class::new(Category::RateLimited)),
//!     Ok(status) if *status >= 500 => Some(Class::new(Category::ServerError)),
//!     Ok(_) => None,
//!     Err(e) => Some(defaults.classify_error(&**e)),
//! });
//! let mut svc = ServiceBuilder::new()
//!     .layer(ClassifyLayer::new(classifier))
//!     .service(agent);
//!
//! assert_eq!(svc.ready().await.unwrap().call("hello").await.unwrap(), 200);
//!
//! let err = svc.ready().await.unwrap().call("busy").await.unwrap_err();
//! assert_eq!(class_of(&err).category, Category::RateLimited);
//! // The failing response can be restored by whoever wants it after all.
//! assert_eq!(FailedResponse::<u16>::restore(err).unwrap(), 429);
//!
//! let err = svc.ready().await.unwrap().call("?").await.unwrap_err();
//! assert_eq!(class_of(&err).category, Category::Network);
//! assert_eq!(err.to_string(), "connection reset by peer");
//! # }
//! ```
//!
//! # Classification rules
//!
//! [`DefaultClassifier`] tries, for each error of the `source()` chain: a class already given
//! ([`Classified`], [`FailedResponse`]); the user's type rules; palisade's own errors
//! ([`failure`]: timeouts, open circuits, ...); [`register`]ed error types of the user's;
//! `std::io::ErrorKind`s; tower's and
//! tokio's `Elapsed`. Then message patterns ([`DEFAULT_MESSAGE_RULES`]: `rate limit`,
//! `unauthorized`, `Service Unavailable`, ...), extended by the user with [`ClassifierBuilder`].
//! A number in a message is a status code only where the message says so (`HTTP 503`,
//! `status code: 503`, `Error code: 429`, a message that opens with the code): "prompt is 512
//! tokens over the limit" is not a server error. Anything else is `Unknown` and retryable
//! (configurable): an unrecognised failure is more often passing than permanent, and the retry
//! budget bounds the cost of being wrong. Retry hints in messages (`retry after 30 seconds`)
//! become [`Class::retry_after`], as long as the message says: the retry layer, not the
//! classifier, decides whether a wait is too long.
//!
//! # Errors
//!
//! Errors leave [`ClassifyService`] as [`Classified`], which displays as the original error and
//! exposes it through [`Classified::inner`]. Failing `Ok` responses leave as
//! [`FailedResponse<R>`]. Errors the classifier accepted as normal outcomes leave as
//! [`Classified`] with [`Category::Ignored`]: not retried, not counted against health.
//!
//! # Server hints
//!
//! The [`hint`] module parses `retry-after-ms`, `Retry-After`, `grpc-retry-pushback-ms` and
//! `x-should-retry` into the durations the server asked for, never cut short (a ceiling is the
//! reading layer's decision). `Retry-After` dates are measured from a `now` the caller gives, or
//! from [`hint::wall_clock`], which follows tokio's clock so paused-clock tests cover them.
//!
//! # Context between layers
//!
//! Besides the class, the layers of a stack share a small per-call [`context`]: the deadline of
//! the whole call, and the attempt (its number, the endpoint to avoid, how many earlier attempts
//! timed out, whether one is being dropped for its timeout). It lives here so that every layer
//! reaches it through this crate alone; it follows one poll on one thread, and
//! [`context::carry`] takes it across task boundaries (a `Buffer`, a spawned task) in the
//! request.
//!
//! # Statistics
//!
//! [`ErrorStats`] is an error aggregator: failures per category over a
//! sliding window in fixed memory, with rates and pattern detection.

#![cfg_attr(docsrs, feature(doc_cfg))]

mod class;
mod classifier;
pub mod context;
pub mod error;
pub mod failure;
pub mod future;
pub mod hint;
mod layer;
pub mod metrics;
mod registry;
#[cfg(feature = "serde")]
pub mod serde_duration;
#[cfg(feature = "serde")]
pub mod serde_off;
#[cfg(feature = "serde")]
pub mod serde_seed;
mod service;
mod stats;
pub mod stripe;
pub mod sync;
pub mod time;
pub mod trace;
pub mod window;

#[cfg(test)]
mod tests;

pub use class::{Category, Class, FaultLevel, HealthImpact, Severity};
pub use classifier::{
    ClassifierBuilder, Classify, ClassifyFn, DEFAULT_HINT_PATTERN, DEFAULT_MESSAGE_RULES,
    DefaultClassifier, class_of, class_of_dyn, classify_fn, io_class,
};
/// The attempt context, at its path from before [`context`] held it: the same module as
/// [`context::attempt`].
pub use context::attempt;
pub use error::{Classified, ConfigError, FailedResponse};
pub use layer::ClassifyLayer;
pub use registry::{HasClass, register};
pub use service::ClassifyService;
pub use stats::{ErrorSnapshot, ErrorStats, ErrorStatsBuilder};

/// The error type that crosses palisade's layers, as in tower.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;
