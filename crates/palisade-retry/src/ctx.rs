//! The deadline and escalation context shared with palisade-timeout.

use tokio::time::Instant;

/// The deadline of the enclosing Deadline layer, if any.
#[inline]
pub(crate) fn deadline() -> Option<Instant> {
    None
}

/// Runs `call` with the number of earlier attempts of this request that timed out.
#[inline]
pub(crate) fn with_timeouts<R>(timeouts: u32, call: impl FnOnce() -> R) -> R {
    let _ = timeouts;
    call()
}
