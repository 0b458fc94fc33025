//! The deadline: when the whole call must be done. Documented with the parent module.

use std::cell::Cell;
use std::time::Duration;

use tokio::time::Instant;

thread_local! {
    /// The earliest deadline, among the enclosing scopes, whose clock has started.
    static STARTED: Cell<Option<Instant>> = const { Cell::new(None) };
    /// The shortest limit among enclosing deadlines whose clock has not started: all of them
    /// are in their first poll, so they start together, at [`NOW`].
    static LAZY: Cell<Option<Duration>> = const { Cell::new(None) };
    /// When the lazy deadlines started, once somebody read the clock for them.
    static NOW: Cell<Option<Instant>> = const { Cell::new(None) };
}

/// The instant a deadline of `limit` started at `start` ends: `start + limit`, or about 30 years
/// from `start` when that overflows (as tokio's own `sleep` treats a limit too long to add), so
/// a limit that long means "no limit", never a panic.
///
/// [`with_lazy_deadline`] publishes exactly this instant once its clock has started; a deadline
/// future arms its timer with it so that the timer and what the layers below read agree.
#[inline]
pub fn deadline_after(start: Instant, limit: Duration) -> Instant {
    start
        .checked_add(limit)
        .unwrap_or_else(|| start + Duration::from_secs(86_400 * 365 * 30))
}

/// The effective deadline of the enclosing deadline scopes on this thread (the earliest of
/// them), as set by palisade-timeout's `Deadline` while it polls its call; `None` outside any.
///
/// The first call inside a deadline whose clock has not started reads the clock and starts it.
#[inline]
pub fn deadline() -> Option<Instant> {
    let started = STARTED.get();
    let Some(limit) = LAZY.get() else {
        return started;
    };
    let now = NOW.get().unwrap_or_else(|| {
        let now = Instant::now();
        NOW.set(Some(now));
        now
    });
    let lazy = deadline_after(now, limit);
    Some(started.map_or(lazy, |s| s.min(lazy)))
}

// Invariants between the cells, which the scopes below rely on to save and restore only what
// they change: `NOW` is `Some` only while `LAZY` is (it is set by a `deadline` read under a lazy
// deadline, and cleared when the outermost lazy scope ends); a scope leaves each cell it does not
// set as it found it, since every nested scope restores its own.

/// Restores the enclosing scope's deadlines even if the closure panics.
struct Restore {
    started: Option<Instant>,
    lazy: Option<Duration>,
}

impl Drop for Restore {
    #[inline]
    fn drop(&mut self) {
        STARTED.set(self.started);
        LAZY.set(self.lazy);
        // An enclosing lazy deadline started when the clock was read in here too: it keeps the
        // reading. Otherwise nothing outside this scope is waiting for one (and `NOW` was
        // `None` when this scope began).
        if self.lazy.is_none() {
            NOW.set(None);
        }
    }
}

/// Puts back the three cells [`without_deadline`] cleared, even if its closure panics.
struct RestoreAll {
    started: Option<Instant>,
    lazy: Option<Duration>,
    now: Option<Instant>,
}

impl Drop for RestoreAll {
    #[inline]
    fn drop(&mut self) {
        STARTED.set(self.started);
        LAZY.set(self.lazy);
        NOW.set(self.now);
    }
}

/// Runs `f` outside every enclosing deadline scope ([`deadline`] is `None` inside, unless `f`
/// sets one), and puts them back afterwards as they were: a lazy deadline whose clock had not
/// started still has not.
#[inline]
pub(super) fn without_deadline<R>(f: impl FnOnce() -> R) -> R {
    let restore = RestoreAll {
        started: STARTED.replace(None),
        lazy: LAZY.replace(None),
        now: NOW.replace(None),
    };
    let out = f();
    drop(restore);
    out
}

// Each scope below calls its closure exactly once, so that the compiler inlines it and builds
// what it returns (a response future, typically) in place.

/// Runs `f` with `deadline` as the current deadline, combined with any enclosing one (the
/// earlier wins).
#[inline]
pub fn with_deadline<R>(deadline: Instant, f: impl FnOnce() -> R) -> R {
    let restore = Restore {
        started: STARTED.get(),
        lazy: LAZY.get(),
    };
    STARTED.set(Some(restore.started.map_or(deadline, |d| d.min(deadline))));
    let out = f();
    drop(restore);
    out
}

/// Runs `f` under a deadline of `*limit` from `*started`; when `*started` is `None`, the clock
/// has not started: it starts at the first [`deadline`] read inside `f`, and `*started` is set
/// to that instant afterwards. It stays `None` if nobody read it, unless an enclosing lazy
/// deadline's clock had started already (read before this scope began, in the same poll): then
/// it is that reading, and `*limit` is cut to what the enclosing deadline grants from it, the
/// deadline the scope was under.
///
/// When the clock starts inside `f`, `*limit` becomes the time the deadline those reads saw
/// grants from `*started`: cut to an enclosing deadline that ends first, so that `*started`
/// plus `*limit` is the instant the reads were given. An enclosing deadline already past by
/// then sets `*started` to it, with nothing granted. (Computed from what the scope read when it
/// began: no clock or context is read for it.)
#[inline]
pub fn with_lazy_deadline<R>(
    limit: &mut Duration,
    started: &mut Option<Instant>,
    f: impl FnOnce() -> R,
) -> R {
    let restore = Restore {
        started: STARTED.get(),
        lazy: LAZY.get(),
    };
    let lazy = started.is_none();
    match *started {
        Some(start) => {
            let deadline = deadline_after(start, *limit);
            STARTED.set(Some(restore.started.map_or(deadline, |d| d.min(deadline))));
        }
        None => LAZY.set(Some(restore.lazy.map_or(*limit, |l| l.min(*limit)))),
    }
    let out = f();
    if lazy {
        *started = NOW.get();
        if let Some(start) = *started {
            // An enclosing lazy deadline started at the same read, so the shorter limit holds;
            // an enclosing started one holds where it ends first.
            *limit = restore.lazy.map_or(*limit, |l| l.min(*limit));
            if let Some(outer) = restore.started
                && outer < deadline_after(start, *limit)
            {
                *limit = outer.saturating_duration_since(start);
                *started = Some(start.min(outer));
            }
        }
    }
    drop(restore);
    out
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn deadlines_nest_to_the_minimum_and_restore() {
        let rt = crate::context::paused_runtime();
        let _guard = rt.enter();
        let now = Instant::now();
        let (a, b) = (
            now + Duration::from_millis(10),
            now + Duration::from_millis(20),
        );
        assert_eq!(deadline(), None);
        with_deadline(b, || {
            assert_eq!(deadline(), Some(b));
            with_deadline(a, || assert_eq!(deadline(), Some(a)));
            assert_eq!(deadline(), Some(b));
        });
        with_deadline(a, || with_deadline(b, || assert_eq!(deadline(), Some(a))));
        assert_eq!(deadline(), None);
    }

    /// A lazy clock started inside its scope reports the time the reads were granted: cut to
    /// an enclosing deadline that ends first, started or lazy, and started at an enclosing one
    /// already past; left whole when nothing encloses it, nobody read it, or it ends first.
    #[test]
    fn a_lazy_clock_started_inside_reports_what_the_reads_were_granted() {
        let rt = crate::context::paused_runtime();
        let _guard = rt.enter();
        let ms = Duration::from_millis;
        let now = Instant::now();
        let run = |limit: u64, read: bool| {
            let (mut limit, mut started) = (ms(limit), None);
            let seen = with_lazy_deadline(&mut limit, &mut started, || read.then(deadline));
            (seen.flatten(), started, limit)
        };
        assert_eq!(run(100, true), (Some(now + ms(100)), Some(now), ms(100)));
        assert_eq!(run(100, false), (None, None, ms(100)));
        with_deadline(now + ms(50), || {
            assert_eq!(run(100, true), (Some(now + ms(50)), Some(now), ms(50)));
            assert_eq!(run(20, true), (Some(now + ms(20)), Some(now), ms(20)));
            assert_eq!(run(100, false), (None, None, ms(100)));
        });
        let (mut outer, mut outer_started) = (ms(30), None);
        with_lazy_deadline(&mut outer, &mut outer_started, || {
            assert_eq!(run(100, true), (Some(now + ms(30)), Some(now), ms(30)));
        });
        assert_eq!((outer_started, outer), (Some(now), ms(30)));
        let past = now - ms(5);
        with_deadline(past, || {
            assert_eq!(run(100, true), (Some(past), Some(past), ms(0)))
        });
    }
}

#[cfg(test)]
mod lazy_tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn a_lazy_deadline_nobody_reads_never_starts() {
        let mut started = None;
        let out = with_lazy_deadline(&mut Duration::from_secs(1), &mut started, || 7);
        assert_eq!(out, 7);
        assert_eq!(started, None);
        assert_eq!(NOW.get(), None);
        assert_eq!(LAZY.get(), None);
    }

    #[test]
    fn lazy_and_started_deadlines_nest_to_the_earliest_and_restore() {
        let rt = crate::context::paused_runtime();
        let _guard = rt.enter();
        let t0 = Instant::now();
        let ms = Duration::from_millis;

        // A started outer deadline, a lazy inner one that is earlier.
        let mut inner = None;
        with_deadline(t0 + ms(500), || {
            with_lazy_deadline(&mut ms(100), &mut inner, || {
                assert_eq!(deadline(), Some(t0 + ms(100)));
            });
            assert_eq!(deadline(), Some(t0 + ms(500)));
        });
        assert_eq!(inner, Some(t0));
        assert_eq!((deadline(), NOW.get()), (None, None));

        // A lazy outer one (its first poll) over a started inner one that is later, and a
        // second lazy one: the shortest limit wins, and both lazy ones learn the start.
        let (mut outer, mut second) = (None, None);
        with_lazy_deadline(&mut ms(200), &mut outer, || {
            with_deadline(t0 + ms(900), || {
                with_lazy_deadline(&mut ms(300), &mut second, || {
                    assert_eq!(deadline(), Some(t0 + ms(200)));
                });
            });
        });
        assert_eq!((outer, second), (Some(t0), Some(t0)));
        assert_eq!((deadline(), NOW.get(), LAZY.get()), (None, None, None));

        // Once started, the same deadline is published as started.
        with_lazy_deadline(&mut ms(200), &mut outer, || {
            assert_eq!(LAZY.get(), None);
            assert_eq!(deadline(), Some(t0 + ms(200)));
        });
    }

    #[test]
    fn a_panic_inside_restores_the_enclosing_scope() {
        let rt = crate::context::paused_runtime();
        let _guard = rt.enter();
        let mut started = None;
        let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            with_lazy_deadline(&mut Duration::from_secs(1), &mut started, || {
                let _ = deadline();
                panic!("inner poll panicked");
            })
        }));
        assert!(caught.is_err());
        assert_eq!((deadline(), NOW.get(), LAZY.get()), (None, None, None));
        assert_eq!(STARTED.get(), None);
    }

    /// Outside every deadline inside, the enclosing ones back afterwards exactly: a lazy one
    /// not started stays not started (a read inside the isolated scope does not start it), a
    /// started one keeps its reading, and a panic inside restores all three cells.
    #[test]
    fn without_deadline_sets_every_enclosing_deadline_aside() {
        let rt = crate::context::paused_runtime();
        let _guard = rt.enter();
        let t0 = Instant::now();
        let ms = Duration::from_millis;

        let mut lazy = None;
        with_deadline(t0 + ms(500), || {
            with_lazy_deadline(&mut ms(100), &mut lazy, || {
                without_deadline(|| {
                    assert_eq!(deadline(), None);
                    assert_eq!((STARTED.get(), LAZY.get(), NOW.get()), (None, None, None));
                    // A deadline set inside stands alone.
                    with_deadline(t0 + ms(900), || assert_eq!(deadline(), Some(t0 + ms(900))));
                });
                assert_eq!(LAZY.get(), Some(ms(100)));
                assert_eq!(NOW.get(), None, "not started by the isolated read");
                assert_eq!(STARTED.get(), Some(t0 + ms(500)));
            });
        });
        assert_eq!(lazy, None);

        let mut read = None;
        with_lazy_deadline(&mut ms(100), &mut read, || {
            let seen = deadline();
            without_deadline(|| assert_eq!(deadline(), None));
            assert_eq!(NOW.get(), Some(t0), "the reading is kept");
            assert_eq!(deadline(), seen);
            let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                without_deadline(|| panic!("a poll inside panicked"))
            }));
            assert!(caught.is_err());
            assert_eq!((LAZY.get(), NOW.get()), (Some(ms(100)), Some(t0)));
        });
        assert_eq!((deadline(), NOW.get(), LAZY.get()), (None, None, None));
    }
}
