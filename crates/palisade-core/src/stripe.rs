//! Per-thread striping, for state that every call touches.
//!
//! A response future that must reach shared state when it completes holds a reference count
//! on it. If every call on every thread clones the same `Arc`, the count's cache line bounces
//! between cores on each call: on two threads that made the fallback layer's happy path 3.5×
//! slower than on one. [`Striped`] keeps a copy of a small value (typically an `Arc`) in
//! several reference-counted stripes, each on its own cache lines. Each service instance
//! [`pick`](Striped::pick)s one when it is made or cloned (round robin) and its calls clone
//! only that one; instances are cloned per connection or per worker, so threads rarely write
//! the same line. For state reached by thread rather than by instance,
//! [`local`](Striped::local) gives this thread's stripe.
//!
//! ```
//! use std::sync::Arc;
//! use palisade_core::stripe::Striped;
//!
//! let shared = Striped::new(Arc::new(String::from("config")));
//! let a = shared.pick().clone(); // one instance's stripe
//! let b = shared.pick().clone(); // the next instance's: another cache line
//! assert!(!Arc::ptr_eq(&a, &b));
//! assert_eq!(a.as_str(), "config");
//! assert_eq!(shared.get().as_str(), "config");
//! ```

use std::cell::Cell;
use std::fmt;
use std::ops::Deref;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use crate::sync::CachePadded;

static NEXT: AtomicUsize = AtomicUsize::new(0);

std::thread_local! {
    static MINE: Cell<usize> = const { Cell::new(usize::MAX) };
}

/// This thread's stripe number, assigned round robin at the thread's first use (any `usize`;
/// callers reduce it modulo their stripe count).
#[inline]
pub fn current() -> usize {
    MINE.with(|mine| {
        let id = mine.get();
        if id != usize::MAX {
            return id;
        }
        let id = number(NEXT.fetch_add(1, Ordering::Relaxed));
        mine.set(id);
        id
    })
}

/// The number of the thread that drew `counter`: the counter itself, its top bit cleared so
/// that it never equals `usize::MAX`, the "no number yet" mark. Threads are numbered in the
/// order of their first use, so consecutive threads take neighbouring stripes.
#[inline]
const fn number(counter: usize) -> usize {
    counter & (usize::MAX >> 1)
}

/// How many stripes per-thread state should have on this machine: twice the available
/// parallelism, rounded up to a power of two, between 4 and 64. Read once per process: the
/// standard library asks the operating system each time (cgroup files on Linux), which cost
/// a per-key breaker about 30 µs for every new key.
pub fn count() -> usize {
    static COUNT: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *COUNT.get_or_init(|| {
        let cores = std::thread::available_parallelism().map_or(4, |n| n.get());
        count_for(cores)
    })
}

/// [`count()`] on a machine with `cores` cores.
fn count_for(cores: usize) -> usize {
    (cores * 2).next_power_of_two().clamp(4, 64)
}

/// One stripe of a [`Striped`] value: its own copy, on its own cache lines. Dereferences to
/// the value.
pub struct Stripe<T>(CachePadded<T>);

impl<T> Deref for Stripe<T> {
    type Target = T;

    #[inline]
    fn deref(&self) -> &T {
        &self.0
    }
}

impl<T: fmt::Debug> fmt::Debug for Stripe<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// A value shared through several reference-counted [`Stripe`]s, each holding
/// its own clone of it (typically a few `Arc`s, so that what the value points to is shared and
/// reading it from a future is one pointer away).
pub struct Striped<T> {
    /// A power-of-two number of stripes.
    stripes: Box<[Arc<Stripe<T>>]>,
    /// The next stripe [`pick`](Striped::pick) hands out.
    next: AtomicUsize,
}

impl<T: Clone> Striped<T> {
    /// Spreads clones of `value` over [`count()`] stripes.
    pub fn new(value: T) -> Self {
        Striped::from_fn(|_| value.clone())
    }
}

impl<T> Striped<T> {
    /// [`count()`] stripes, stripe `i` holding `f(i)`: for a value that differs per stripe,
    /// such as the index of the stripe's own slot in a table of per-stripe counters.
    pub fn from_fn(f: impl FnMut(usize) -> T) -> Self {
        Striped {
            stripes: (0..count())
                .map(f)
                .map(|value| Arc::new(Stripe(CachePadded::new(value))))
                .collect(),
            next: AtomicUsize::new(0),
        }
    }

    /// Stripe number `n`, reduced modulo the number of stripes: for an instance that keeps one
    /// stripe number across several `Striped` values (one per key of a map, say), so that its
    /// calls use the same stripe of whichever value they reach.
    #[inline]
    pub fn nth(&self, n: usize) -> &Arc<Stripe<T>> {
        &self.stripes[n & (self.stripes.len() - 1)]
    }

    /// This thread's stripe (see [`current`]): for state that calls reach by thread rather
    /// than by service instance.
    #[inline]
    pub fn local(&self) -> &Arc<Stripe<T>> {
        &self.stripes[current() & (self.stripes.len() - 1)]
    }

    /// The next stripe, round robin: for a new instance of a service that keeps one stripe
    /// for all its calls (instances are cloned per connection or per worker, so they spread
    /// over the stripes, and a call reads no thread-local).
    pub fn pick(&self) -> &Arc<Stripe<T>> {
        &self.stripes[self.next.fetch_add(1, Ordering::Relaxed) & (self.stripes.len() - 1)]
    }

    /// The value (the first stripe's copy).
    #[inline]
    pub fn get(&self) -> &T {
        &self.stripes[0]
    }
}

impl<T: fmt::Debug> fmt::Debug for Striped<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Striped")
            .field("value", self.get())
            .field("stripes", &self.stripes.len())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stripes_are_a_power_of_two_and_threads_keep_theirs() {
        let n = count();
        assert!(n.is_power_of_two() && (4..=64).contains(&n));
        assert_eq!(current(), current());
        let here = current();
        let there = std::thread::spawn(current).join().unwrap();
        assert_ne!(here, there);
    }

    #[test]
    fn threads_are_numbered_in_order_and_never_with_the_mark() {
        assert_eq!([number(0), number(1), number(2), number(3)], [0, 1, 2, 3]);
        assert_eq!(
            number(usize::MAX),
            usize::MAX >> 1,
            "not the no-number mark"
        );
        assert_eq!(
            number((1 << (usize::BITS - 1)) + 5),
            5,
            "wraps after 2^63 threads"
        );
    }

    #[test]
    fn every_stripe_holds_a_clone_of_the_value() {
        let value = Arc::new(vec![1, 2, 3]);
        let striped = Striped::new(value.clone());
        assert_eq!(Arc::strong_count(&value), 1 + count());
        let picks: Vec<_> = (0..count() + 1).map(|_| striped.pick().clone()).collect();
        for (i, pick) in picks.iter().enumerate() {
            let seen: &Arc<Vec<i32>> = pick;
            assert!(Arc::ptr_eq(seen, &value));
            // Round robin: every stripe once, then the first again.
            let same = Arc::ptr_eq(pick, &picks[0]);
            assert_eq!(same, i == 0 || i == count(), "pick {i}");
        }
        // Each stripe is its own allocation, on its own cache lines.
        assert!(std::mem::align_of::<Stripe<u8>>() >= 128);
        drop((striped, picks));
        assert_eq!(Arc::strong_count(&value), 1);
    }

    #[test]
    fn from_fn_gives_each_stripe_its_value_and_nth_wraps() {
        let striped = Striped::from_fn(|i| i * 10);
        let n = count();
        for i in 0..n {
            assert_eq!(***striped.nth(i), i * 10);
            assert!(Arc::ptr_eq(striped.nth(i), striped.nth(i + n)));
        }
        // Round robin over the same stripes.
        assert_eq!(***striped.pick(), 0);
        assert_eq!(***striped.pick(), 10);
        assert_eq!(*striped.get(), 0);
    }

    #[test]
    fn twice_the_cores_rounded_up_to_a_power_of_two_within_4_and_64() {
        let got: Vec<usize> = [1, 2, 3, 4, 5, 8, 9, 31, 32, 33, 1000]
            .into_iter()
            .map(count_for)
            .collect();
        assert_eq!(got, [4, 4, 8, 8, 16, 16, 32, 64, 64, 64, 64]);
    }

    #[test]
    fn local_is_the_stripe_of_this_threads_number() {
        let striped = Arc::new(Striped::from_fn(|i| i));
        let n = count();
        // Each new thread takes the next number (other tests' threads may take some between).
        let seen: Vec<(usize, usize)> = (0..2 * n)
            .map(|_| {
                let striped = striped.clone();
                std::thread::spawn(move || (current(), ***striped.local()))
                    .join()
                    .unwrap()
            })
            .collect();
        for (number, stripe) in &seen {
            assert_eq!(*stripe, number % n, "thread number {number}");
        }
        assert!(Arc::ptr_eq(striped.local(), striped.nth(current())));
    }

    #[test]
    fn debug_shows_the_value_and_the_stripe_count() {
        let striped = Striped::new(7u8);
        assert_eq!(
            format!("{striped:?}"),
            format!("Striped {{ value: 7, stripes: {} }}", count())
        );
        assert_eq!(format!("{:?}", **striped.pick()), "7");
    }
}
