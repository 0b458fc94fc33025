//! palisade: tower middleware that keeps agent services alive when what they depend on fails.
//!
//! Each resilience pattern is a tower `Layer` in its own crate, re-exported here behind a
//! feature of the same name (all on by default through `full`):
//!
//! | module | crate | what it does |
//! |---|---|---|
//! | [`classify`] | `palisade-classify` | turns every outcome into a [`Class`](classify::Class), once, at the source |
//! | [`breaker`] | `palisade-breaker` | guards a dependency as a whole: lock-free circuit breaker, sliding windows, half-open probes |
//! | [`retry`] | `palisade-retry` | retries what the class says is worth retrying: backoff and jitter, within lock-free retry budgets and the deadline |
//! | [`route`] | `palisade-route` | spreads calls over endpoints by health: state machine, ramps, outlier ejection, tiers, panic mode |
//! | [`timeout`] | `palisade-timeout` | bounds each attempt (`Timeout`, escalating after timeouts) and the whole call (`Deadline`, visible to the layers inside) |
//!
//! # Stacking order
//!
//! Outermost first:
//!
//! ```text
//! caller ─▶ fallback ─▶ deadline ─▶ retry(+budget) ─▶ breaker ─▶ timeout ─▶ route ─▶ classify ─▶ endpoint
//! ```
//!
//! `classify` sits closest to each endpoint and classifies every outcome exactly once; every
//! layer above reads that verdict with [`classify::class_of`].
//!
//! # Example
//!
//! ```
//! use palisade::classify::{class_of, BoxError, Category, ClassifyLayer, DefaultClassifier};
//! use tower::{Service, ServiceBuilder, ServiceExt, service_fn};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let tool = service_fn(|_: ()| async { Err::<(), BoxError>("503 Service Unavailable".into()) });
//! let mut svc = ServiceBuilder::new()
//!     .layer(ClassifyLayer::new(DefaultClassifier::default()))
//!     .service(tool);
//! let err = svc.ready().await.unwrap().call(()).await.unwrap_err();
//! assert_eq!(class_of(&err).category, Category::ServerError);
//! # }
//! ```

#[cfg(feature = "classify")]
#[doc(inline)]
pub use palisade_classify as classify;

#[cfg(feature = "classify")]
pub use palisade_classify::BoxError;

#[cfg(feature = "retry")]
#[doc(inline)]
pub use palisade_retry as retry;

#[cfg(feature = "route")]
#[doc(inline)]
pub use palisade_route as route;

#[cfg(feature = "timeout")]
#[doc(inline)]
pub use palisade_timeout as timeout;

#[cfg(feature = "breaker")]
#[doc(inline)]
pub use palisade_breaker as breaker;
