//! Synchronisation building blocks shared by palisade's layers: atomics that come from
//! [loom](https://docs.rs/loom) when a crate is built with `RUSTFLAGS="--cfg palisade_loom"`,
//! and a cache-line padding wrapper.
//!
//! Every layer's lock-free state (breaker counters, retry budgets, router health words,
//! feature switches, error statistics) reaches its atomics through this module, so that one
//! `--cfg` swaps all of them for loom's model-checked versions, the way tokio's internal
//! `loom` shim does. Outside loom builds these are plain re-exports of [`std::sync`].
//!
//! ```
//! use palisade_core::sync::CachePadded;
//! use palisade_core::sync::atomic::{AtomicU64, Ordering};
//!
//! let counter = CachePadded::new(AtomicU64::new(0));
//! counter.fetch_add(1, Ordering::Relaxed);
//! assert_eq!(counter.load(Ordering::Relaxed), 1);
//! assert_eq!(std::mem::align_of_val(&counter), 128);
//! ```

use std::fmt;
use std::ops::{Deref, DerefMut};

/// Atomic integers and [`Ordering`](atomic::Ordering): loom's under `--cfg palisade_loom`,
/// std's otherwise.
pub mod atomic {
    #[cfg(palisade_loom)]
    pub use loom::sync::atomic::{
        AtomicBool, AtomicI64, AtomicU8, AtomicU32, AtomicU64, AtomicUsize, Ordering,
    };
    #[cfg(not(palisade_loom))]
    pub use std::sync::atomic::{
        AtomicBool, AtomicI64, AtomicU8, AtomicU32, AtomicU64, AtomicUsize, Ordering,
    };
}

#[cfg(palisade_loom)]
pub use loom::sync::{Arc, Mutex};
#[cfg(not(palisade_loom))]
pub use std::sync::{Arc, Mutex};

/// A value aligned to 128 bytes, so that it shares no cache line with its neighbours.
///
/// 128 rather than 64 because x86's adjacent-line prefetcher pulls cache lines in pairs and
/// Apple's and some ARM server cores use 128-byte lines (the same choice as crossbeam's
/// `CachePadded` on those targets). Used for per-stripe counters and for state that one
/// thread writes while others read.
#[repr(align(128))]
#[derive(Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct CachePadded<T>(T);

impl<T> CachePadded<T> {
    /// Pads `value`.
    #[inline]
    pub const fn new(value: T) -> Self {
        CachePadded(value)
    }

    /// The value, unpadded.
    #[inline]
    pub fn into_inner(self) -> T {
        self.0
    }
}

impl<T> Deref for CachePadded<T> {
    type Target = T;

    #[inline]
    fn deref(&self) -> &T {
        &self.0
    }
}

impl<T> DerefMut for CachePadded<T> {
    #[inline]
    fn deref_mut(&mut self) -> &mut T {
        &mut self.0
    }
}

impl<T: fmt::Debug> fmt::Debug for CachePadded<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl<T> From<T> for CachePadded<T> {
    fn from(value: T) -> Self {
        CachePadded(value)
    }
}

#[cfg(all(test, not(palisade_loom)))]
mod tests {
    use super::*;

    #[test]
    fn padding_separates_neighbours() {
        let pair = [CachePadded::new(1u8), CachePadded::new(2u8)];
        let a = &*pair[0] as *const u8 as usize;
        let b = &*pair[1] as *const u8 as usize;
        assert_eq!(b - a, 128);
        assert_eq!(std::mem::size_of::<CachePadded<u64>>(), 128);
        assert_eq!(pair[1].into_inner(), 2);
        let mut c = CachePadded::from(5u32);
        *c += 1;
        assert_eq!(*c, 6);
        assert_eq!(format!("{c:?}"), "6");
    }
}
