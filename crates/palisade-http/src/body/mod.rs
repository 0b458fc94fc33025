//! Request and response bodies: replay for retries, timeouts and trailers while streaming,
//! failing responses' bodies read for the classifier.
//!
//! - [`ReplayLayer`] keeps request bodies up to a limit in memory so that a retry layer above
//!   can send a request again (`Request<Incoming>` and axum's requests are not `Clone`), either
//!   read before the first attempt or ([`ReplayLayer::streaming`], for gRPC client-streaming
//!   and bidirectional calls and uploads) recorded as they stream; [`ReplayAttempts`] on the
//!   retry layer keeps it from sending again a body over the limit.
//! - [`GuardLayer`] watches response bodies as they stream: an idle timeout between frames, a
//!   whole-body limit, and the gRPC status of the trailers; a body that fails yields an error
//!   that carries its class.
//! - [`StreamBreakerLayer`] is a circuit breaker that judges a streamed call when its body
//!   ends: a body that fails half-way (an error, a stall, a failing gRPC status in the
//!   trailers) is the call's failure, so the breaker opens after enough of them.
//! - [`PeekLayer`] reads the start of each failing response's body (up to a limit) into a
//!   [`BodyExcerpt`] that [`HttpClassifier`](crate::HttpClassifier) reads, and gives the
//!   caller the whole body all the same: OpenAI's 429 that says `insufficient_quota` is then
//!   a spent quota, not retried, rather than a passing rate limit.

mod guard;
mod judge;
mod peek;
mod record;
mod replay;

pub use guard::{BodyTimeout, Guard, GuardFuture, GuardLayer, GuardedBody, IdleTimeout};
pub use judge::{JudgedBody, StreamBreaker, StreamBreakerFuture, StreamBreakerLayer};
pub use peek::{BodyExcerpt, Peek, PeekFuture, PeekLayer, PeekLayerBuilder, PeekedBody};
pub use replay::{NotReplayable, Replay, ReplayAttempts, ReplayBody, ReplayFuture, ReplayLayer};

#[cfg(test)]
mod tests;
