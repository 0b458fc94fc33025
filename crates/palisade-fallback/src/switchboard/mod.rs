//! The degradation switchboard: named features that can be turned off by hand or turn
//! themselves off when they keep failing, answering with their fallback meanwhile.
//!
//! A feature's words are "on" and "off" ([`Feature::turn_on`], [`Feature::turn_off`]): a
//! feature that is off sends every call to its fallback, the opposite of a bypassed breaker,
//! which lets every call through.

mod future;
mod layer;
mod service;
mod state;

pub use future::GateFuture;
pub use layer::{FeatureBuilder, FeatureLayer};
pub use palisade_core::failure::FeatureOff;
pub use service::Gate;
pub use state::{Feature, FeatureConfig, FeatureState, FeatureStatus, Switchboard};

#[cfg(all(test, not(palisade_loom)))]
mod tests;
