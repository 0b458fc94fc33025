//! The deadline and escalation parts of the context between layers.
//!
//! Reads and sets [`palisade_core::context`]; unit tests can also set the context through
//! the thread-locals below.

use palisade_core::context;
use tokio::time::Instant;

/// The deadline of the enclosing deadline scope (palisade-timeout's `Deadline`), if any.
#[inline]
pub(crate) fn deadline() -> Option<Instant> {
    #[cfg(test)]
    if let Some(deadline) = hooks::DEADLINE.get() {
        return Some(deadline);
    }
    context::deadline()
}

/// Runs `call` with the number of earlier attempts of this request that timed out.
#[inline]
pub(crate) fn with_timeouts<R>(timeouts: u32, call: impl FnOnce() -> R) -> R {
    #[cfg(test)]
    hooks::TIMEOUTS.with_borrow_mut(|seen| seen.push(timeouts));
    context::attempt::with_timeouts_so_far(timeouts, call)
}

#[cfg(test)]
pub(crate) mod hooks {
    use std::cell::{Cell, RefCell};

    use tokio::time::Instant;

    std::thread_local! {
        pub(crate) static DEADLINE: Cell<Option<Instant>> = const { Cell::new(None) };
        pub(crate) static TIMEOUTS: RefCell<Vec<u32>> = const { RefCell::new(Vec::new()) };
    }
}
