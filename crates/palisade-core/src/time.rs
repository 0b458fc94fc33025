//! Duration arithmetic the layers share.

use std::time::Duration;

/// `d` in whole milliseconds, saturating at `u64::MAX` (about 585 million years).
///
/// A configured `Duration::MAX` means "for good"; `d.as_millis() as u64` would wrap it round
/// to a short time, or a time in the past once added to now. Every layer that keeps
/// milliseconds in an atomic or a store converts through this.
///
/// ```
/// use palisade_core::time::millis;
/// use std::time::Duration;
///
/// assert_eq!(millis(Duration::from_micros(2_500)), 2);
/// assert_eq!(millis(Duration::MAX), u64::MAX);
/// // 2^64 ms and a little more: `as u64` would give 384.
/// assert_eq!(millis(Duration::from_millis(u64::MAX) + Duration::from_millis(385)), u64::MAX);
/// ```
pub fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}
