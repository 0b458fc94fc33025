//! The errors of [`Timeout`](crate::Timeout) and [`Deadline`](crate::Deadline).
//!
//! Both live in [`palisade_core::failure`] with palisade's other failures, so that
//! [`class_of`](palisade_core::class_of) knows their classes without any registration.

pub use palisade_core::failure::{DeadlineExceeded, Elapsed};
