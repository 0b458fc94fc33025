//! HTTP for palisade.

#![cfg_attr(docsrs, feature(doc_cfg))]

pub mod body;
pub mod deadline;
pub mod grpc;
pub mod health;
pub mod hint;
pub mod respond;
mod status;
pub mod transport;

pub use respond::{ErrorResponseLayer, HttpAnswer, HttpError};
pub use status::{
    HttpClassifier, HttpClassifierBuilder, apply_hints, describe_status, status_class,
};
