//! The errors of [`Timeout`](crate::Timeout) and [`Deadline`](crate::Deadline).
//!
//! Both live in [`palisade_classify::failure`] with palisade's other failures, so that
//! [`class_of`](palisade_classify::class_of) knows their classes without any registration.

pub use palisade_classify::failure::{DeadlineExceeded, Elapsed};
