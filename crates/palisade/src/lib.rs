//! palisade: tower middleware that keeps agent services alive when what they depend on fails.
//!
//! Each resilience pattern is a tower `Layer` in its own crate, re-exported here behind a
//! feature of the same name (all on by default through `full`):
//!
//! | module | crate | what it does |
//! |---|---|---|
//! | [`classify`] | `palisade-core` | turns every outcome into a [`Class`](classify::Class), once, at the source |
//! | [`fallback`] | `palisade-fallback` | answers anyway when nothing else worked: constant, computed, last-good and alternative-service answers, marked degraded |
//! | [`breaker`] | `palisade-breaker` | guards a dependency as a whole: lock-free circuit breaker, failure-rate and slow-call rules over sliding windows, client-side adaptive throttling while closed, half-open probes |
//! | [`retry`] | `palisade-retry` | retries what the class says is worth retrying: backoff and jitter or a server's hint, within lock-free retry budgets (by default behind gRPC-style retry throttling) and the deadline |
//! | [`route`] | `palisade-route` | spreads calls over endpoints by health: state machine, ramps, outlier ejection, tiers, panic mode |
//! | [`timeout`] | `palisade-timeout` | bounds each attempt (`Timeout`, escalating after timeouts) and the whole call (`Deadline`, visible to the layers inside) |
//! | [`health`] | (this crate) | a monitor that gathers breakers, routers and call counts into one snapshot per dependency, with a trend and anomaly detection |
//! | [`chaos`] | `palisade-chaos` | injects seeded faults to test all of the above: failures, responses, latency, hangs, outage windows, capacity limits; a passthrough when switched off |
//!
//! A module is its crate, so the examples in its pages name the crate: `palisade_retry::RetryLayer`
//! there is `palisade::retry::RetryLayer` here, `palisade_http::HttpClassifier` is
//! `palisade::http::HttpClassifier`, and `palisade_core` is [`classify`] (its `context` module
//! also at [`context`]). With `palisade` as the only dependency, write the `palisade::` paths.
//!
//! Two modules are not in `full` and need their own feature: `http` (feature `http-layers`,
//! `palisade-http`: classifiers, hints and endpoints for HTTP, hyper, axum and gRPC) and
//! `durable` (feature `durable`, `palisade-durable`: sagas with compensation on a
//! write-ahead journal, a review queue, checkpoints and two-phase commit for multi-step agent
//! pipelines; it is not a layer, and its embedded store compiles SQLite from C).
//!
//! # Features
//!
//! | feature | in `full` | what it adds |
//! |---|---|---|
//! | `classify`, `retry`, `route`, `timeout`, `breaker`, `fallback`, `chaos` | yes | the module of the same name (above) |
//! | `health` | yes | [`health`], the monitor |
//! | `config` | yes | [`config`], the recommended stack from a TOML file with `PALISADE_…` environment overrides |
//! | `metrics` | yes | metrics through the `metrics` facade (`classify::metrics`) |
//! | `http` | yes | `http::Request` carries the layers' [`context`] across task boundaries |
//! | `serde` | no (`config` turns it on) | `Serialize`/`Deserialize` for classes and the layers' configurations |
//! | `http-layers` | no | `http` (`palisade-http`): HTTP and gRPC classifiers, hyper's errors by kind, server retry hints, error responses for servers (`Responder`, `ErrorResponseLayer`), `/health` and `/ready` as a tower service, deadline propagation, replayable bodies, failing responses' bodies read for the classifier (`PeekLayer`: a 429 that says the quota is spent is not retried) |
//! | `http-axum` | no | `http-layers`, and axum: `IntoResponse` for palisade's errors and answers (`HttpError`, `HttpAnswer`) and `Health::router`, the health endpoints as an axum `Router` |
//! | `http-route` | no | `http-layers` and `route`, and routers in `/ready` (`Health::route`) |
//! | `http-tower-http` | no | `http-layers`, and adapters to and from tower-http's `classify` module (`http::tower_http`) |
//! | `durable` | no | `durable` (`palisade-durable`) with its SQLite store |
//!
//! With `http-axum`, a handler returns palisade's errors as responses (an open breaker is a
//! 503 with `Retry-After`), and `/health` and `/ready` merge into the app:
//!
//! ```
//! # #[cfg(not(all(feature = "http-axum", feature = "breaker")))]
//! # fn main() {}
//! # #[cfg(all(feature = "http-axum", feature = "breaker"))]
//! # #[tokio::main(flavor = "current_thread", start_paused = true)]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use axum::body::Body;
//! use axum::extract::State;
//! use axum::http::{Request, StatusCode};
//! use axum::{Router, routing::get};
//! use palisade::breaker::BreakerLayer;
//! use palisade::classify::BoxError;
//! use palisade::http::HttpError;
//! use palisade::http::health::Health;
//! use tower::util::BoxCloneSyncService;
//! use tower::{ServiceBuilder, ServiceExt, service_fn};
//!
//! type Llm = BoxCloneSyncService<(), String, BoxError>;
//!
//! /// The model's answer; a failure is answered by palisade's mapping (an open breaker: 503).
//! async fn ask(State(llm): State<Llm>) -> Result<String, HttpError> {
//!     Ok(llm.oneshot(()).await?)
//! }
//!
//! let breaker = BreakerLayer::new("llm");
//! let llm = ServiceBuilder::new()
//!     .layer(breaker.clone())
//!     .service(service_fn(|_: ()| async { Ok::<_, BoxError>("an answer".to_owned()) }));
//! let health = Health::new().breaker(breaker.handle());
//! let app = Router::new()
//!     .route("/ask", get(ask))
//!     .with_state(BoxCloneSyncService::new(llm))
//!     .merge(health.router()?); // a ConfigError for paths axum cannot take
//!
//! let get = |path: &str| Request::get(path).body(Body::empty()).unwrap();
//! assert_eq!(app.clone().oneshot(get("/ask")).await.unwrap().status(), StatusCode::OK);
//! assert_eq!(app.clone().oneshot(get("/ready")).await.unwrap().status(), StatusCode::OK);
//! breaker.handle().isolate();
//! let refused = app.clone().oneshot(get("/ask")).await.unwrap();
//! assert_eq!(refused.status(), StatusCode::SERVICE_UNAVAILABLE);
//! assert_eq!(
//!     app.clone().oneshot(get("/ready")).await.unwrap().status(),
//!     StatusCode::SERVICE_UNAVAILABLE
//! );
//! assert_eq!(app.oneshot(get("/health")).await.unwrap().status(), StatusCode::OK);
//! # Ok(())
//! # }
//! ```
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
//! The layers also pass each other a small [`context`]: the deadline, and the attempt (which
//! endpoint failed last, how many attempts timed out). It follows the poll on the current
//! task; where a `tower::buffer::Buffer`, a spawned task or a client with its own task sits
//! between two layers, put [`context::CarryLayer`] above it and [`context::ResumeLayer`] below
//! it so the context travels in the request (see [`context::carry`]).
//!
//! [`preset::recommended`] builds deadline → retry → breaker → timeout → classify as one layer,
//! added with [`ServiceBuilderExt::palisade`]. The `palisade-sim` crate of the repository runs
//! that stack beside tower's layers through faults in virtual time
//! (`cargo run --release -p palisade-sim`).
//!
//! # Example
//!
//! ```
//! use palisade::breaker::BreakerLayer;
//! use palisade::classify::{BoxError, ClassifyLayer, DefaultClassifier, class_of};
//! use palisade::retry::RetryLayer;
//! use palisade::timeout::{DeadlineLayer, TimeoutLayer};
//! use std::time::Duration;
//! use tower::{ServiceBuilder, ServiceExt, service_fn};
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)]
//! # async fn main() {
//! let tool = service_fn(|_: ()| async { Err::<(), BoxError>("404 model not found".into()) });
//! let agent = ServiceBuilder::new()
//!     .layer(DeadlineLayer::new(Duration::from_secs(30)))
//!     .layer(RetryLayer::new())
//!     .layer(BreakerLayer::new("llm"))
//!     .layer(TimeoutLayer::new(Duration::from_secs(10)))
//!     .layer(ClassifyLayer::new(DefaultClassifier::default()))
//!     .service(tool);
//! // A 404 is a client fault: not retried, not counted against the dependency.
//! let err = agent.oneshot(()).await.unwrap_err();
//! assert!(!class_of(&err).retryable);
//! assert_eq!(err.to_string(), "404 model not found");
//! # }
//! ```
//!
//! # Calling from a spawned task
//!
//! Every palisade future is `Send` when the service it wraps and that service's future are,
//! so a stack can be cloned into a spawned task, as a handler or an agent loop does. Inside an
//! `async` block, call it with `ready().await?.call(req)`, or spawn `oneshot`'s future itself:
//!
//! ```
//! use palisade::ServiceBuilderExt;
//! use palisade::classify::BoxError;
//! use tower::{Service, ServiceBuilder, ServiceExt, service_fn};
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)]
//! # async fn main() -> Result<(), BoxError> {
//! let llm = ServiceBuilder::new()
//!     .palisade(palisade::preset::recommended("llm").build()?)
//!     .service(service_fn(|prompt: String| async move { Ok::<_, BoxError>(prompt) }));
//!
//! let mut agent = llm.clone();
//! let answer = tokio::spawn(async move { agent.ready().await?.call("hi".to_owned()).await });
//! assert_eq!(answer.await??, "hi");
//!
//! let answer = tokio::spawn(llm.oneshot("hello".to_owned()));
//! assert_eq!(answer.await??, "hello");
//! # Ok(()) }
//! ```
//!
//! `svc.oneshot(req).await` inside a spawned `async` block does not compile ("implementation
//! of `From` is not general enough") where the service at the bottom answers `BoxError`, over
//! palisade's layers as over tower's own (`tower::timeout::Timeout` over a `service_fn`
//! already): tower's `Oneshot` names the stack's future as `S::Future`, and rustc cannot prove
//! that `Send` inside an `async` block (rust-lang/rust#64552). palisade's own futures take the
//! inner future as a type parameter instead, so they never add to it; the repository's
//! `tests/spawn.rs` spawns every layer so.

#![cfg_attr(docsrs, feature(doc_cfg))]

#[cfg(feature = "config")]
pub mod config;
#[cfg(feature = "health")]
pub mod health;

#[cfg(feature = "classify")]
#[doc(inline)]
pub use palisade_core as classify;

#[cfg(feature = "classify")]
pub use palisade_core::BoxError;

/// The context the layers pass each other (deadline, attempt), and the layers that carry it
/// across a task boundary such as `tower::buffer::Buffer` or a spawned task
/// ([`CarryLayer`](context::CarryLayer) above it, [`ResumeLayer`](context::ResumeLayer) below).
#[cfg(feature = "classify")]
pub use palisade_core::context;

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

#[cfg(feature = "fallback")]
#[doc(inline)]
pub use palisade_fallback as fallback;

#[cfg(feature = "chaos")]
#[doc(inline)]
pub use palisade_chaos as chaos;

/// HTTP and gRPC (feature `http-layers`, not in `full`): the `palisade-http` crate. Its axum
/// integration, its routers in `/ready` and its tower-http adapters come with the features
/// `http-axum`, `http-route` and `http-tower-http` (see the [crate docs](crate#features)).
#[cfg(feature = "http-layers")]
#[cfg_attr(docsrs, doc(cfg(feature = "http-layers")))]
#[doc(inline)]
pub use palisade_http as http;

/// Durable agent workflows (feature `durable`, not in `full`): the `palisade-durable` crate,
/// with its embedded SQLite store. For the PostgreSQL store, depend on `palisade-durable`
/// with its feature `postgres` as well.
///
/// ```
/// use std::sync::Arc;
/// use palisade::durable::saga::StepRequest;
/// use palisade::durable::store::MemoryStore;
/// use palisade::durable::{SagaDefinition, SagaState, Sagas, Step};
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)]
/// # async fn main() {
/// let greet = Step::new("greet", tower::service_fn(|_r: StepRequest| async {
///     Ok::<_, palisade::BoxError>(serde_json::json!("hello"))
/// }));
/// let sagas = Sagas::builder(Arc::new(MemoryStore::new()))
///     .define(SagaDefinition::new("welcome", vec![greet]).unwrap())
///     .build()
///     .unwrap();
/// let done = sagas.run("welcome", "w-1", serde_json::Value::Null).await.unwrap();
/// assert_eq!(done.state, SagaState::Completed);
/// # }
/// ```
#[cfg(feature = "durable")]
#[cfg_attr(docsrs, doc(cfg(feature = "durable")))]
#[doc(inline)]
pub use palisade_durable as durable;

#[cfg(all(
    feature = "classify",
    feature = "timeout",
    feature = "retry",
    feature = "breaker"
))]
pub mod preset;

mod builder;
pub use builder::ServiceBuilderExt;
