//! Per-attempt timeouts (with escalation) and whole-call deadlines for tower services.
//!
//! The [`context`] module carries the current deadline and the number of timed-out attempts
//! between layers of a stack.

pub mod context;
