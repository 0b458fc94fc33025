//! Per-endpoint state: atomics only, shared by the router, its futures and the checker.

use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::task::Waker;

use arc_swap::ArcSwap;
use palisade_core::sync::CachePadded;
use palisade_core::sync::atomic::{AtomicBool, AtomicU8, AtomicU32, AtomicU64, Ordering};
use palisade_core::{Category, Class, HealthImpact, stripe};
use tokio::time::Instant;

use crate::RouteConfig;
use crate::health::Health;

/// Milliseconds from `origin` to `now` (0 before it).
pub(crate) fn ms_since(origin: Instant, now: Instant) -> u64 {
    millis(now.saturating_duration_since(origin))
}

/// A configured `Duration::MAX` means "for good": whole milliseconds, saturating.
pub(crate) use palisade_core::time::millis;

/// The router's configuration, shared by its handle and every endpoint, and swapped whole by
/// [`RouteHandle::reconfigure`](crate::RouteHandle::reconfigure). Loaded only off the settled
/// success path (failures, checks, an endpoint that is not plainly healthy).
pub(crate) type LiveConfig = Arc<ArcSwap<RouteConfig>>;

/// A [`LiveConfig`] holding `config`.
pub(crate) fn live(config: RouteConfig) -> LiveConfig {
    Arc::new(ArcSwap::from_pointee(config))
}

/// Tokens for endpoints, process-wide. Std's atomic even in loom builds: a static, and no model
/// checks how tokens are handed out.
static NEXT_TOKEN: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

/// Everything the router knows about one endpoint.
#[derive(Debug)]
pub(crate) struct EndpointState {
    /// Unique across all routers of the process: what the attempt context names.
    pub(crate) token: u64,
    pub(crate) tier: u8,
    /// The key's `Debug`, what logs name the endpoint by: replaced with the key when discovery
    /// inserts the endpoint again (see `Set::insert`). Read only off the per-call path.
    label: ArcSwap<String>,
    pub(crate) config: LiveConfig,
    pub(crate) origin: Instant,
    /// The router's event counter: bumped by anything that may change who is eligible.
    epoch: Arc<AtomicU64>,
    health: AtomicU64,
    /// When the slow start it was added with began ([`Health::ramp_start`]), `u64::MAX` when
    /// it was added healthy: see [`starting`](Self::starting).
    started: u64,
    /// Calls in flight: the load power-of-two-choices compares. Every call writes it, so it
    /// has cache lines of its own and does not evict the fields every pick reads.
    pub(crate) in_flight: CachePadded<AtomicU32>,
    consecutive_failures: AtomicU32,
    /// Milliseconds since the origin until which the endpoint is ejected (0: never was).
    ejected_until: AtomicU64,
    ejections: AtomicU32,
    /// Milliseconds since the origin until which a rate-limited endpoint is skipped.
    cooldown_until: AtomicU64,
    /// Successes in the current outlier interval, counted per lane (see [`LaneRef`]), each on
    /// cache lines of its own.
    lanes: Box<[CachePadded<AtomicU64>]>,
    /// Failures in the current outlier interval.
    failures: AtomicU64,
    /// Last active check, ms since origin + 1 (0: never).
    last_check: AtomicU64,
    /// The category of the last failure + 1 (0: none).
    last_error: AtomicU8,
    /// Active check history for the trend: a ring of per-bucket (slot, healthy, total), the
    /// slot being the bucket's number modulo 2^32, compared with wrapping arithmetic (buckets
    /// of 1 ms, the smallest, wrap every 49.7 days); a cell with no check is 0. Each check
    /// empties the cells that left its window, and [`trend`](Self::trend) reads none while
    /// the last check (kept in full, `last_check`) is out of the window; a check after a
    /// pause of 2^30 buckets empties them all first. So an old cell is never taken for a
    /// recent one.
    trend: [AtomicU64; TREND_BUCKETS],
    /// The router instances that waited for this endpoint's readiness, woken when it is taken
    /// out of traffic.
    pub(crate) waiters: Waiters,
}

pub(crate) const TREND_BUCKETS: usize = 10;

/// The slot (a bucket number modulo 2^32) of a trend cell.
fn unpack_slot(v: u64) -> u32 {
    (v >> 32) as u32
}

/// One lane's reference to an endpoint's state, kept in a [`CachePadded`] (see [`Lanes`]) so
/// that it has cache lines of its own.
///
/// Each router instance takes a lane when it is made or cloned (round robin), and its calls
/// hold that lane's reference and count their successes in that lane: instances on different
/// threads (a clone per connection or per worker) never write the same reference count or
/// counter. Only the load (`in_flight`), which power-of-two-choices must compare across all
/// callers, stays one shared counter per endpoint.
#[derive(Debug)]
pub(crate) struct LaneRef {
    pub(crate) state: Arc<EndpointState>,
    pub(crate) lane: usize,
}

/// A lane's reference on its own cache lines: what a call holds (its reference count is
/// written by every call of the lane's router instance).
pub(crate) type PaddedLaneRef = Arc<CachePadded<LaneRef>>;

/// An endpoint's lane references, one per stripe.
pub(crate) type Lanes = Arc<[PaddedLaneRef]>;

/// The lane references of `state`, one per stripe (a power of two).
pub(crate) fn lane_refs(state: &Arc<EndpointState>) -> Lanes {
    (0..state.lanes.len())
        .map(|lane| {
            Arc::new(CachePadded::new(LaneRef {
                state: state.clone(),
                lane,
            }))
        })
        .collect()
}

impl EndpointState {
    pub(crate) fn new(
        tier: u8,
        label: String,
        health: Health,
        config: LiveConfig,
        origin: Instant,
        epoch: Arc<AtomicU64>,
    ) -> Self {
        EndpointState {
            epoch,
            token: NEXT_TOKEN.fetch_add(1, Ordering::Relaxed),
            tier,
            label: ArcSwap::from_pointee(label),
            config,
            origin,
            health: AtomicU64::new(health.pack()),
            started: health.ramp_start().unwrap_or(u64::MAX),
            in_flight: CachePadded::default(),
            consecutive_failures: AtomicU32::new(0),
            ejected_until: AtomicU64::new(0),
            ejections: AtomicU32::new(0),
            cooldown_until: AtomicU64::new(0),
            lanes: (0..stripe::count())
                .map(|_| CachePadded::default())
                .collect(),
            failures: AtomicU64::new(0),
            last_check: AtomicU64::new(0),
            last_error: AtomicU8::new(0),
            trend: std::array::from_fn(|_| AtomicU64::new(0)),
            waiters: Waiters::default(),
        }
    }

    /// What logs name the endpoint by: its key's `Debug`.
    pub(crate) fn label(&self) -> Arc<String> {
        self.label.load_full()
    }

    /// Names the endpoint by `label` from now on (discovery inserted it again, under a key that
    /// is equal to the old one but may print differently).
    pub(crate) fn relabel(&self, label: String) {
        self.label.store(Arc::new(label));
    }

    /// Milliseconds since the router's origin.
    pub(crate) fn now_ms(&self) -> u64 {
        ms_since(self.origin, Instant::now())
    }

    pub(crate) fn health(&self) -> Health {
        Health::unpack(self.health.load(Ordering::Acquire))
    }

    /// Whether `health`, this endpoint's, is still the slow start it was added with: a new
    /// endpoint, healthy, whose share ramps up only to spare it a full share while it warms.
    pub(crate) fn starting(&self, health: Health) -> bool {
        self.started != u64::MAX && health.starting(self.started)
    }

    /// Tells the router that eligibility may have changed (never on the settled success path),
    /// and wakes the router instances waiting for this endpoint's readiness if the change took
    /// it out of traffic: they are to stop waiting for it (see [`Waiters`]).
    fn bump(&self) {
        // SeqCst, with the load of `armed` after it: a waiting instance arms, then loads the
        // epoch (SeqCst) before it looks at this endpoint again, so either this load sees it
        // armed or its look sees the change.
        self.epoch.fetch_add(1, Ordering::SeqCst);
        if self.waiters.armed.load(Ordering::SeqCst) {
            self.wake_waiters();
        }
    }

    /// Wakes every router instance waiting for this endpoint's readiness, whatever its health:
    /// discovery removed it, or replaced its service, so what they wait for is gone.
    pub(crate) fn wake_every_waiter(&self) {
        if self.waiters.armed.load(Ordering::SeqCst) {
            self.waiters.wake(self.token);
        }
    }

    /// Someone waits for this endpoint: wakes them if it has no share of traffic now (ejected,
    /// held, cooling down, failed), not for a change that leaves it one (a first failure).
    #[cold]
    fn wake_waiters(&self) {
        let cfg = self.config.load();
        if crate::pick::look(self, &cfg, self.now_ms()).weight == 0.0 {
            self.waiters.wake(self.token);
        }
    }

    fn update_health(&self, f: impl Fn(Health) -> Health) {
        let _ = self
            .health
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |v| {
                Some(f(Health::unpack(v)).pack())
            });
        // After the change: a scan that reads the new epoch also reads the new state.
        self.bump();
    }

    pub(crate) fn ejected_until(&self) -> u64 {
        self.ejected_until.load(Ordering::Acquire)
    }

    pub(crate) fn cooldown_until(&self) -> u64 {
        self.cooldown_until.load(Ordering::Acquire)
    }

    pub(crate) fn consecutive_failures(&self) -> u32 {
        self.consecutive_failures.load(Ordering::Relaxed)
    }

    pub(crate) fn ejections(&self) -> u32 {
        self.ejections.load(Ordering::Relaxed)
    }

    pub(crate) fn last_check(&self) -> Option<u64> {
        self.last_check.load(Ordering::Relaxed).checked_sub(1)
    }

    pub(crate) fn last_error(&self) -> Option<Category> {
        let i = self.last_error.load(Ordering::Relaxed);
        (i > 0).then(|| Category::ALL[usize::from(i - 1)])
    }

    /// Whether no active check has judged it: then real calls are its only signals, and an
    /// endpoint the health machine holds out gets a trial when its hold ends.
    pub(crate) fn trials(&self) -> bool {
        self.last_check.load(Ordering::Relaxed) == 0
    }

    /// Ejects for base × strikes (times in a row it was taken out), capped; an endpoint the
    /// health machine already holds out stays ejected until its hold ends. Returns the
    /// ejection's end.
    pub(crate) fn eject(&self, cfg: &RouteConfig, now_ms: u64) -> u64 {
        let mut until = now_ms;
        let _ = self
            .health
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |v| {
                let (health, end) = Health::unpack(v).eject(cfg, now_ms);
                until = end;
                Some(health.pack())
            });
        let n = self.ejections.fetch_add(1, Ordering::Relaxed) + 1;
        self.ejected_until.store(until, Ordering::Release);
        self.consecutive_failures.store(0, Ordering::Relaxed);
        self.bump();
        tracing::warn!(endpoint = %self.label(), ejections = n, for_ms = until.saturating_sub(now_ms), "endpoint ejected");
        until
    }

    /// Ejects it as [`eject`](Self::eject) does, unless it is ejected already or
    /// `within_cap` (asked once this ejection is visible to every other counter) finds too
    /// many endpoints ejected; returns whether it did.
    ///
    /// Ejectors on other threads (another router clone's pick, the checker) each count the
    /// ejected endpoints, then eject: counted before ejecting, two of them could both see room
    /// for one more and exceed the cap. So the ejection is claimed first, by a compare-and-swap
    /// of its end (which also keeps two ejectors from ejecting one endpoint twice, a strike
    /// too many), then the count is taken, with read-modify-writes
    /// ([`ejected_at`](Self::ejected_at)); over the cap, the claim is undone and nothing else
    /// changed. Of two ejectors racing, at least one sees the other's claim (each reads the
    /// other's endpoint by a read-modify-write after its own claim, so one of them reads after
    /// the other's claim), and they never both keep theirs; they may both give up, and the
    /// next pick ejects.
    pub(crate) fn try_eject(
        &self,
        cfg: &RouteConfig,
        now_ms: u64,
        within_cap: impl FnOnce() -> bool,
    ) -> bool {
        let before = self.ejected_until.load(Ordering::Acquire);
        if before > now_ms {
            return false;
        }
        let (_, claim) = self.health().eject(cfg, now_ms);
        let claim = claim.max(now_ms + 1);
        if self
            .ejected_until
            .compare_exchange(before, claim, Ordering::AcqRel, Ordering::Acquire)
            .is_err()
        {
            return false;
        }
        if !within_cap() {
            let _ = self.ejected_until.compare_exchange(
                claim,
                before,
                Ordering::AcqRel,
                Ordering::Relaxed,
            );
            return false;
        }
        self.eject(cfg, now_ms);
        true
    }

    /// Whether it is ejected at `now_ms`, as an ejector counts (see
    /// [`try_eject`](Self::try_eject)): by a read-modify-write that changes nothing, which
    /// reads the latest end (a load may read an older one). The ejection path only.
    pub(crate) fn ejected_at(&self, now_ms: u64) -> bool {
        self.ejected_until.fetch_add(0, Ordering::AcqRel) > now_ms
    }

    /// A successful call: the hot path. Two relaxed increments when the endpoint is settled
    /// (the configuration is loaded only when it is not).
    pub(crate) fn on_success(&self, lane: usize, now_ms: impl FnOnce() -> u64) {
        self.lanes[lane % self.lanes.len()].fetch_add(1, Ordering::Relaxed);
        if self.consecutive_failures.load(Ordering::Relaxed) != 0 {
            self.consecutive_failures.store(0, Ordering::Relaxed);
        }
        if !self.health().is_settled_healthy() {
            let now = now_ms();
            let cfg = self.config.load();
            self.update_health(|h| h.on_outcome(true, &cfg, now));
        }
    }

    /// A failed call, judged by its class.
    pub(crate) fn on_failure(&self, class: Class, cfg: &RouteConfig, now_ms: u64) {
        match class.health_impact() {
            HealthImpact::None => {}
            HealthImpact::Soft => {
                let wait = class
                    .retry_after
                    .unwrap_or(cfg.cooldown)
                    .min(cfg.max_cooldown);
                self.cooldown_until
                    .fetch_max(now_ms.saturating_add(millis(wait)), Ordering::AcqRel);
                self.bump();
                self.last_error
                    .store(class.category.index() as u8 + 1, Ordering::Relaxed);
            }
            HealthImpact::Full => {
                self.failures.fetch_add(1, Ordering::Relaxed);
                // Counted before the health update bumps the epoch, so the next pick sees it;
                // not while ejected (calls in flight when it was ejected, or sent to it in
                // panic mode): the ejection already answered those failures, and counted they
                // would eject it again the moment its ejection ends, without its trial.
                if self.ejected_until() <= now_ms {
                    self.consecutive_failures.fetch_add(1, Ordering::Relaxed);
                }
                self.last_error
                    .store(class.category.index() as u8 + 1, Ordering::Relaxed);
                let ejected = self.ejected_until();
                self.update_health(|h| {
                    if ejected > now_ms {
                        h.on_failure_while_ejected(cfg, now_ms, ejected)
                    } else {
                        h.on_outcome(false, cfg, now_ms)
                    }
                });
            }
        }
    }

    /// An active check's verdict.
    pub(crate) fn on_check(
        &self,
        healthy: bool,
        cfg: &RouteConfig,
        now_ms: u64,
        trend_bucket_ms: u64,
    ) {
        // The newest check's time, whatever order racing checks are stored in (their clocks
        // read apart): a check stored after a later one does not make the trend look older.
        let previous = self.last_check.fetch_max(now_ms + 1, Ordering::Relaxed);
        self.update_health(|h| h.on_check(healthy, cfg, now_ms));
        // Trend ring: slot << 32 | healthy << 16 | total, one CAS. The slot is the bucket's
        // number modulo 2^32 (with 1 ms buckets, the smallest, it wraps every 49.7 days), and
        // ages are taken with wrapping arithmetic; a cell in use has a total of at least 1.
        let bucket = now_ms / trend_bucket_ms.max(1);
        let slot = bucket as u32;
        // After a pause of checks long enough for ages to wrap (2^30 buckets: 12 days with
        // buckets of 1 ms), every cell is stale: emptied, before a wrapped slot can pass for a
        // recent one.
        if previous != 0
            && bucket.saturating_sub((previous - 1) / trend_bucket_ms.max(1)) >= 1 << 30
        {
            self.clear_trend();
        }
        let cell = &self.trend[(bucket % TREND_BUCKETS as u64) as usize];
        let _ = cell.fetch_update(Ordering::AcqRel, Ordering::Acquire, |v| {
            let (s, ok, total) = (unpack_slot(v), (v >> 16) & 0xffff, v & 0xffff);
            let (ok, total) = if s == slot && total > 0 {
                (ok, total)
            } else {
                (0, 0)
            };
            let ok = (ok + u64::from(healthy)).min(0xffff);
            let total = (total + 1).min(0xffff);
            Some((u64::from(slot) << 32) | (ok << 16) | total)
        });
        // The cells that left the window are emptied, so that no cell stays untouched for
        // 2^32 buckets, long enough for its wrapped slot to look recent again: after a check,
        // every cell in use is from that check's window, or after it (a check racing this one
        // with a later clock: a negative age, left alone).
        for cell in &self.trend {
            let _ = cell.fetch_update(Ordering::AcqRel, Ordering::Acquire, |v| {
                let age = slot.wrapping_sub(unpack_slot(v)) as i32;
                (v != 0 && age >= TREND_BUCKETS as i32).then_some(0)
            });
        }
    }

    /// Healthy and total checks in the trend window ending at `now_ms`.
    pub(crate) fn trend(&self, now_ms: u64, trend_bucket_ms: u64) -> (u64, u64) {
        let bucket = trend_bucket_ms.max(1);
        let newest = now_ms / bucket;
        // No check in the window, by the last check's full time: nothing, and no cell read by
        // its wrapped slot, which could look recent again 2^32 buckets later.
        let recent = |last: u64| newest.saturating_sub(last / bucket) < TREND_BUCKETS as u64;
        if !self.last_check().is_some_and(recent) {
            return (0, 0);
        }
        let newest = newest as u32;
        self.trend.iter().fold((0, 0), |(ok, total), cell| {
            let v = cell.load(Ordering::Acquire);
            // Its age in buckets, wrapping: a check after now's bucket is "older" than any.
            let age = newest.wrapping_sub(unpack_slot(v));
            if v & 0xffff != 0 && age < TREND_BUCKETS as u32 {
                (ok + ((v >> 16) & 0xffff), total + (v & 0xffff))
            } else {
                (ok, total)
            }
        })
    }

    /// A failed call, judged by its class under the configuration in force.
    pub(crate) fn on_failure_now(&self, class: Class) {
        self.on_failure(class, &self.config.load(), self.now_ms());
    }

    /// Forgets the active checks' trend (its buckets' width changed).
    pub(crate) fn clear_trend(&self) {
        for cell in &self.trend {
            cell.store(0, Ordering::Release);
        }
    }

    /// Takes the outcomes counted since the last interval.
    pub(crate) fn take_interval(&self) -> (u64, u64) {
        let successes = self
            .lanes
            .iter()
            .map(|lane| lane.swap(0, Ordering::AcqRel))
            .sum();
        (successes, self.failures.swap(0, Ordering::AcqRel))
    }
}

/// Where a router instance that waits for an endpoint leaves its task's waker: one per
/// instance, made at its first wait, with the token of the endpoint it waits for (which stays
/// when a wake-up takes the waker).
#[derive(Debug, Default)]
pub(crate) struct Waiting(Mutex<(u64, Option<Waker>)>);

impl Waiting {
    /// Waits for the endpoint with token `token` with `waker`; returns the token waited for
    /// before (0: none).
    pub(crate) fn set(&self, token: u64, waker: &Waker) -> u64 {
        let mut slot = lock(&self.0);
        let before = std::mem::replace(&mut slot.0, token);
        match &mut slot.1 {
            Some(w) if w.will_wake(waker) => {}
            w => *w = Some(waker.clone()),
        }
        before
    }
}

/// The router instances that waited for one endpoint's readiness, woken when a change of the
/// endpoint takes it out of traffic: the crate docs say a router stops waiting for an endpoint
/// once it is ejected, held out or cooling down, and only the endpoint's own service would
/// wake it otherwise (when it is ready, which may be never). The per-call path never touches
/// this: an instance registers only when its `poll_ready` waits, and a change of the endpoint
/// (never a success of a healthy one) reads one flag.
///
/// Bounded by the instances alive: each is listed once per endpoint it waited for (by a weak
/// reference, pruned when it registers somewhere), so the list neither keeps a finished task
/// alive nor grows with the waits.
#[derive(Debug, Default)]
pub(crate) struct Waiters {
    /// Some listed instance may be waiting: what a change reads.
    armed: AtomicBool,
    slots: Mutex<Vec<Weak<Waiting>>>,
}

impl Waiters {
    /// Lists `slot` (once): its instance waits for this endpoint now.
    #[cold]
    pub(crate) fn add(&self, slot: &Arc<Waiting>) {
        let mut slots = lock(&self.slots);
        slots.retain(|s| s.strong_count() > 0 && !std::ptr::eq(s.as_ptr(), Arc::as_ptr(slot)));
        slots.push(Arc::downgrade(slot));
    }

    /// Asks the next change that takes the endpoint out to wake the listed instances. SeqCst:
    /// see [`EndpointState::bump`]; the caller loads the epoch after this, then looks again.
    pub(crate) fn arm(&self) {
        self.armed.swap(true, Ordering::SeqCst);
    }

    /// Wakes the listed instances still waiting for the endpoint with token `token`.
    fn wake(&self, token: u64) {
        if !self.armed.swap(false, Ordering::SeqCst) {
            return;
        }
        // Woken outside the list's lock (a waker may run code that waits again, and lists).
        let slots: Vec<_> = lock(&self.slots).iter().filter_map(Weak::upgrade).collect();
        for slot in slots {
            let waker = {
                let mut slot = lock(&slot.0);
                if slot.0 == token { slot.1.take() } else { None }
            };
            if let Some(waker) = waker {
                waker.wake();
            }
        }
    }
}

/// Locks, ignoring poison: every writer leaves the data consistent between statements.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
#[cfg(not(palisade_loom))]
mod tests {
    use super::*;
    use std::time::Duration;

    fn state() -> EndpointState {
        EndpointState::new(
            0,
            "e".into(),
            Health::HEALTHY,
            live(RouteConfig::default()),
            Instant::now(),
            Arc::new(AtomicU64::new(0)),
        )
    }

    #[test]
    fn the_trend_counts_the_checks_of_the_last_window() {
        let cfg = RouteConfig::default();
        let s = state();
        // Buckets of 1 s, ten of them.
        s.on_check(false, &cfg, 0, 1_000);
        s.on_check(true, &cfg, 500, 1_000);
        s.on_check(true, &cfg, 1_500, 1_000);
        assert_eq!(s.trend(1_500, 1_000), (2, 3));
        assert_eq!(s.trend(9_999, 1_000), (2, 3));
        // Checks after now's bucket do not count.
        assert_eq!(s.trend(500, 1_000), (1, 2));
        // The first bucket leaves the window.
        assert_eq!(s.trend(10_000, 1_000), (1, 1));
        assert_eq!(s.trend(10_999, 1_000), (1, 1));
        assert_eq!(s.trend(11_000, 1_000), (0, 0));
        // A check 10 s later takes the first bucket's cell over, from zero.
        s.on_check(true, &cfg, 10_200, 1_000);
        assert_eq!(s.trend(10_200, 1_000), (2, 2));
        assert_eq!(s.trend(500, 1_000), (0, 0));
        assert_eq!(s.last_check(), Some(10_200));
    }

    #[test]
    fn the_trend_wraps_its_slots_without_going_blind() {
        let cfg = RouteConfig::default();
        let s = state();
        // Buckets of 1 ms: the slot wraps every 2^32 ms.
        let wrap = 1u64 << 32;
        s.on_check(true, &cfg, 3, 1);
        assert_eq!(s.trend(3, 1), (1, 1));
        // Out of the window, and 2^32 buckets later, when its slot comes round again: nothing.
        assert_eq!(s.trend(13, 1), (0, 0));
        assert_eq!(s.trend(wrap + 3, 1), (0, 0));
        // Checks around the wrap: seen, whatever their slots, and the window slides on.
        for now in [wrap - 2, wrap - 1, wrap, wrap + 1] {
            s.on_check(now != wrap, &cfg, now, 1);
        }
        assert_eq!(s.trend(wrap + 1, 1), (3, 4));
        assert_eq!(s.trend(wrap + 7, 1), (3, 4));
        assert_eq!(s.trend(wrap + 8, 1), (2, 3));
        // The check at 3, whose slot is that of wrap + 3, was emptied by the first check after
        // the pause: it does not come back in this window.
        assert_eq!(s.trend(wrap + 3, 1), (3, 4));
        // Checks racing with a later clock are kept by an earlier one.
        s.on_check(true, &cfg, wrap + 30, 1);
        s.on_check(false, &cfg, wrap + 25, 1);
        assert_eq!(s.trend(wrap + 30, 1), (1, 2));
        // Weeks of checks at 1 ms buckets: each seen.
        for day in 1..=200u64 {
            let now = 2 * wrap + day * 86_400_000 + 7;
            s.on_check(true, &cfg, now, 1);
            assert_eq!(s.trend(now, 1), (1, 1), "day {day}");
        }
    }

    #[test]
    fn a_check_stored_after_a_later_one_keeps_the_trend_of_the_later_one() {
        let cfg = RouteConfig::default();
        let s = state();
        // Two checks race: the one that read the later clock (14 ms) is stored first.
        s.on_check(true, &cfg, 14, 1);
        s.on_check(false, &cfg, 5, 1);
        assert_eq!(s.last_check(), Some(14));
        // At 15 ms the check at 14 is in the window (the one at 5 just left it).
        assert_eq!(s.trend(15, 1), (1, 1));
    }

    #[test]
    fn a_cell_left_behind_while_checks_go_on_does_not_come_back_with_its_slot() {
        let cfg = RouteConfig::default();
        let s = state();
        // Buckets of 1 ms: a failed check in cell 7, slot 7.
        s.on_check(false, &cfg, 7, 1);
        // Checks go on, each less than 2^30 buckets after the last (no pause that clears the
        // ring), all in cell 0, for more than 2^32 buckets: cell 7 is never written again.
        for k in 1..=8u64 {
            s.on_check(true, &cfg, k * 500_000_000, 1);
        }
        let wrap = 1u64 << 32;
        s.on_check(true, &cfg, wrap + 5, 1);
        // At wrap + 7 the old cell's slot is that of now again: it was emptied when it left
        // the window, so only the check at wrap + 5 counts.
        assert_eq!(s.trend(wrap + 7, 1), (1, 1));
    }

    #[test]
    fn a_bucket_counts_at_most_65535_checks_and_still_counts_them() {
        let cfg = RouteConfig::default();
        let s = state();
        // Bucket 0 (slot 0) of 1000 s: its total saturates at 2^16 - 1, healthy ones stay 0.
        for _ in 0..70_000 {
            s.on_check(false, &cfg, 0, 1_000_000);
        }
        assert_eq!(s.trend(0, 1_000_000), (0, 65_535));
        s.on_check(true, &cfg, 1, 1_000_000);
        assert_eq!(s.trend(1, 1_000_000), (1, 65_535));
    }

    #[test]
    fn an_ejection_is_claimed_before_the_cap_is_asked_even_under_a_millisecond() {
        // An ejection shorter than a millisecond ends, in whole milliseconds, when it starts:
        // its claim still lasts past now, so the cap's count sees it.
        let mut cfg = RouteConfig::default();
        cfg.outlier.base_ejection = Duration::from_micros(500);
        cfg.outlier.max_ejection = Duration::from_micros(500);
        let s = state();
        assert!(s.try_eject(&cfg, 7, || s.ejected_at(7)));
        assert_eq!(s.ejections(), 1);
        // Over the cap, the claim is undone and nothing else changes.
        let t = state();
        assert!(!t.try_eject(&cfg, 7, || !t.ejected_at(7)));
        assert_eq!((t.ejections(), t.ejected_until()), (0, 0));
    }

    #[test]
    fn waiters_list_each_instance_once_and_prune_the_dropped() {
        let waiters = Waiters::default();
        let listed = || lock(&waiters.slots).len();
        let a = Arc::new(Waiting::default());
        // Listed again (it waited for another endpoint in between): still once.
        waiters.add(&a);
        waiters.add(&a);
        assert_eq!(listed(), 1);
        // Another instance waiting for the same endpoint: both listed.
        let b = Arc::new(Waiting::default());
        waiters.add(&b);
        assert_eq!(listed(), 2);
        // An instance that is gone is pruned when another lists itself.
        drop(a);
        let c = Arc::new(Waiting::default());
        waiters.add(&c);
        assert_eq!(listed(), 2);
        waiters.add(&b);
        waiters.add(&c);
        assert_eq!(listed(), 2);
    }

    #[test]
    fn a_success_clears_the_failures_in_a_row() {
        let cfg = RouteConfig::default();
        let s = state();
        let failure = Class::new(Category::ServerError);
        for _ in 0..4 {
            s.on_failure(failure, &cfg, 0);
        }
        assert_eq!(s.consecutive_failures(), 4);
        s.on_success(0, || 0);
        assert_eq!(s.consecutive_failures(), 0);
        s.on_failure(failure, &cfg, 0);
        assert_eq!(s.consecutive_failures(), 1);
        assert_eq!(s.last_error(), Some(Category::ServerError));
        assert_eq!(s.take_interval(), (1, 5));
        assert_eq!(s.take_interval(), (0, 0));
    }

    #[test]
    fn failures_while_ejected_do_not_count_in_a_row() {
        let cfg = RouteConfig::default();
        let s = state();
        let failure = Class::new(Category::ServerError);
        for _ in 0..5 {
            s.on_failure(failure, &cfg, 0);
        }
        assert_eq!(s.eject(&cfg, 0), 30_000);
        assert_eq!(s.consecutive_failures(), 0);
        // Calls in flight when it was ejected fail: counted in the interval, not in a row.
        for _ in 0..5 {
            s.on_failure(failure, &cfg, 29_999);
        }
        assert_eq!(s.consecutive_failures(), 0);
        assert_eq!(s.take_interval(), (0, 10));
        // Once the ejection is over, failures count again.
        s.on_failure(failure, &cfg, 30_000);
        assert_eq!(s.consecutive_failures(), 1);
    }

    #[test]
    fn successes_bring_a_degraded_endpoint_back() {
        let cfg = RouteConfig::default();
        let s = state();
        for _ in 0..3 {
            s.on_failure(Class::new(Category::ServerError), &cfg, 0);
        }
        assert!(!s.health().is_settled_healthy());
        for _ in 0..3 {
            s.on_success(0, || 0);
        }
        assert_eq!(s.health(), Health::HEALTHY);
    }

    #[test]
    fn a_cool_down_of_duration_max_lasts_for_good() {
        let cfg = RouteConfig {
            cooldown: Duration::MAX,
            max_cooldown: Duration::MAX,
            ..RouteConfig::default()
        };
        let s = state();
        s.on_failure(Class::new(Category::RateLimited), &cfg, 5_000);
        assert_eq!(s.cooldown_until(), u64::MAX);
        assert_eq!(millis(Duration::MAX), u64::MAX);
        assert_eq!(millis(Duration::from_millis(1_500)), 1_500);
    }

    #[test]
    fn a_rate_limit_cools_down_and_is_the_last_error() {
        let cfg = RouteConfig::default();
        let s = state();
        let mut limited = Class::new(Category::RateLimited);
        s.on_failure(limited, &cfg, 5_000);
        assert_eq!(s.cooldown_until(), 6_000, "the default cool-down, 1 s");
        assert_eq!(s.last_error(), Some(Category::RateLimited));
        // A hint longer than max_cooldown is capped; a shorter cool-down never shortens one.
        limited.retry_after = Some(Duration::from_secs(600));
        s.on_failure(limited, &cfg, 5_000);
        assert_eq!(s.cooldown_until(), 65_000);
        limited.retry_after = Some(Duration::from_secs(1));
        s.on_failure(limited, &cfg, 5_000);
        assert_eq!(s.cooldown_until(), 65_000);
        // Not a failure of the endpoint: no failure counted, health untouched.
        assert_eq!(s.take_interval(), (0, 0));
        assert_eq!(s.health(), Health::HEALTHY);
        // A client's own error changes nothing at all.
        s.on_failure(Class::new(Category::Validation), &cfg, 5_000);
        assert_eq!(s.last_error(), Some(Category::RateLimited));
        assert_eq!(s.take_interval(), (0, 0));
    }
}
