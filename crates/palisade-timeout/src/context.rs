//! The deadline and escalation context, as this crate's layers publish and read it.
//!
//! These items live in [`palisade_core::context`], the one module for everything palisade's
//! layers pass each other (the deadline and the attempt), and are re-exported here at the path
//! they had before it: `palisade_timeout::context::deadline` and
//! `palisade_core::context::deadline` are the same function.
//!
//! A [`Deadline`](crate::Deadline) future polls its inner future inside
//! [`with_lazy_deadline`], so every layer below it (a retry deciding whether a backoff still
//! fits, a nested deadline) reads the effective [`deadline`]. A retry layer makes each
//! attempt's `inner.call(req)` inside [`with_timeouts_so_far`], so a [`Timeout`](crate::Timeout)
//! configured to escalate reads [`timeouts_so_far`] and gives the attempt a longer limit after
//! earlier attempts timed out. Both follow one poll or call on one thread; see
//! [`palisade_core::context`] for the lazy deadline and the boundaries (a `Buffer`, a
//! spawned task) the context does not cross yet.
//!
//! ```
//! use std::time::Duration;
//! use palisade_timeout::context;
//! use tokio::time::Instant;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let at = Instant::now() + Duration::from_secs(5);
//! assert_eq!(context::deadline(), None);
//! context::with_deadline(at, || {
//!     assert_eq!(palisade_core::context::deadline(), Some(at));
//! });
//! assert_eq!(context::with_timeouts_so_far(2, context::timeouts_so_far), 2);
//! # }
//! ```

pub use palisade_core::context::attempt::{timeouts_so_far, with_timeouts_so_far};
pub use palisade_core::context::{deadline, with_deadline, with_lazy_deadline};
