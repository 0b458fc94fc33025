//! [`FallbackFailed`]: the original failure and each fallback strategy's failure, by name.
//!
//! It lives in [`palisade_core::failure`] with palisade's other failures, so that
//! [`class_of`](palisade_core::class_of) knows its class without any registration.

pub use palisade_core::failure::FallbackFailed;
