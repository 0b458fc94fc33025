//! Fallback for tower services: when nothing else worked, answer anyway — with a fixed answer,
//! one computed from the failure or the request, the last good answer for the same key, or
//! another service's (a fallback agent, a cheaper model, another provider) — and say honestly
//! that it is a degraded one.
//!
//! [`FallbackLayer`] sits outermost in a palisade stack. It reads the class of each failure
//! with [`class_of`](palisade_core::class_of) and, by default, answers the dependency's
//! failures (server errors, network faults, timeouts, rate limits, an open breaker's or a
//! throttle's refusal), not the caller's own faults: a malformed request, a missing resource or
//! refused credentials stay errors, as does the caller's cancellation
//! ([`handles_by_default`] lists them; [`handles`](FallbackBuilder::handles) changes the choice).
//! Its response is an [`Answer`]: the dependency's own ([`Answer::Primary`]), a fallback's
//! marked [`Degraded`], or a failing response handed back ([`Answer::Restored`]) when no
//! fallback answered.
//!
//! A [`Switchboard`] of named features ([`FeatureLayer`]) turns a feature off by hand or after
//! repeated failures, answers with its fallback meanwhile, and turns it back on after a
//! cool-down once a probe call succeeds; a feature back on starts with a clean record, so the
//! failures that turned it off do not count towards turning it off again. A probe holds its
//! slot for at most [`probe_timeout`](FeatureConfig::probe_timeout) (60 s by default), so one
//! that hangs counts as failed instead of keeping the feature off for good, even with no
//! timeout layer below the gate.
//!
//! The [`recovery`] module runs an escalation order for an agent call —
//! retry with backoff, a fallback agent, degradation, a person — by fault level, and reports
//! what it did.
//!
//! Strategies ([`Strategy`]): [`Constant`], [`FromError`], [`FromRequest`], [`Alternative`]
//! (another service), [`LastGood`] and [`Chain`], which tries them in order, each with the
//! call's own error; [`Named`] renames one. An answer's [`Degraded`] marker names the strategy
//! that answered (for a chain, the member), and when every strategy fails, [`FallbackFailed`]
//! names each beside its failure.
//!
//! # Example
//!
//! ```
//! use palisade_core::{BoxError, ClassifyLayer, DefaultClassifier};
//! use palisade_fallback::{Alternative, Answer, Chain, Constant, FallbackLayer};
//! use tower::{ServiceBuilder, ServiceExt, service_fn};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let big_model = service_fn(|_: String| async { Err::<String, BoxError>("503 overloaded".into()) });
//! let small_model = service_fn(|q: String| async move { Ok::<_, BoxError>(format!("short answer to {q}")) });
//!
//! let agent = ServiceBuilder::new()
//!     .layer(FallbackLayer::new(
//!         Chain::new()
//!             .then(Alternative::new(small_model))
//!             .then(Constant("Sorry, try again later.".to_owned())),
//!     ))
//!     .layer(ClassifyLayer::new(DefaultClassifier::default()))
//!     .service(big_model);
//!
//! let answer = agent.oneshot("why".to_owned()).await.unwrap();
//! assert!(answer.is_degraded());
//! let degraded = answer.degraded().unwrap();
//! assert_eq!(degraded.class.category.as_str(), "server_error");
//! assert_eq!(degraded.strategy, "service", "the chain's member that answered");
//! assert_eq!(answer.into_inner(), "short answer to why");
//! # }
//! ```
//!
//! # Requests
//! The layer needs nothing of the request type: a request is cloned, before the call, only
//! when the strategy answers from it ([`Strategy::keep_request`]: [`FromRequest`] and
//! [`Alternative`] do, and they alone ask for `Req: Clone`), never for [`Constant`],
//! [`FromError`] or [`LastGood`]. Responses need only be `Send` (an axum or hyper response
//! is not `Sync`); [`Constant`] and [`LastGood`] keep a shared copy and so ask for `Clone + Sync`,
//! where [`FromError`] builds an answer per call.
//!
//! # Errors
//! A failure the layer does not handle passes through unchanged (or comes back restored, for a
//! failing response). When every strategy fails (or a [`Chain`] has no members to try):
//! [`FallbackFailed`], with the call's own error and each strategy's name beside its failure;
//! but when the call's own failure is a failing response
//! ([`FailedResponse`](palisade_core::FailedResponse)) and
//! [`restore_failed_responses`](FallbackBuilder::restore_failed_responses) is on (the
//! default), the answer is that response handed back, [`Answer::Restored`], not an error.
//! Either way the call is counted in `palisade.fallback.failed` (with palisade-core's
//! `metrics` feature on). A strategy that fails because the caller cancelled (its failure's
//! class is [`Category::Cancelled`](palisade_core::Category::Cancelled)) ends the run: no
//! further member is tried, nothing is counted as failed, and the call fails with that
//! cancellation as it is (where no failing response is handed back), so that the layers
//! above read a cancellation, not a failure of the dependency.
//!
//! A dependency whose readiness fails (`poll_ready`: a connection refused, a buffer whose
//! worker is gone) fails the call that follows instead, without being called: the layer
//! answers it as any failed call ([`Fallback`]'s *Readiness*).
//!
//! # Performance
//! On success the layer adds no allocation and no lock. The strategies that need something
//! from a successful call take it then: [`LastGood`] records a clone of the response under a
//! short lock, and [`FromRequest`] and [`Alternative`] keep a clone of the request before the
//! call (see *Requests*); [`Constant`] and a [`Chain`] of such take nothing. Each service
//! instance's futures share the layer's settings through the instance's own stripe (see
//! [`palisade_core::stripe`]), so clones on different threads never write the same
//! reference count.

#![cfg_attr(docsrs, feature(doc_cfg))]

mod answer;
pub mod error;
pub mod future;
mod layer;
mod recent;
pub mod recovery;
mod service;
mod strategy;
mod switchboard;

pub use answer::{Answer, Degraded};
pub use error::FallbackFailed;
pub use layer::{FallbackBuilder, FallbackLayer, handles_by_default};
pub use service::Fallback;
pub use strategy::{
    Alternative, Chain, Constant, Failure, FallbackFuture, FromError, FromRequest, LastGood,
    LastGoodBuilder, Named, Strategy,
};
pub use switchboard::{
    Feature, FeatureBuilder, FeatureConfig, FeatureLayer, FeatureOff, FeatureState, FeatureStatus,
    Gate, GateFuture, Switchboard,
};

#[cfg(all(test, not(palisade_loom)))]
mod tests;
