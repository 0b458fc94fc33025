//! A feature's state ([`Feature`]): on, turned off by hand, or off by its own failures until a
//! probe succeeds; and the [`Switchboard`] that names them.

use std::fmt;
use std::num::NonZeroU64;
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::task::Waker;
use std::time::Duration;

use palisade_core::sync::CachePadded;
use palisade_core::sync::atomic::{AtomicU64, Ordering};
use palisade_core::time::millis;
use palisade_core::{Category, Class, ConfigError, ErrorStats};
use tokio::time::Instant;

/// The number of buckets a feature's failure window is divided into.
const BUCKETS: usize = 10;

/// The shortest failure window: one nanosecond per bucket.
const MIN_WINDOW: Duration = Duration::from_nanos(BUCKETS as u64);

/// The failure window must be shorter than this: 5,800 years of 365 days (a bucket, a tenth of
/// the window, is counted in `u64` nanoseconds, which hold about 584 years).
const MAX_WINDOW: Duration = Duration::from_secs(5_800 * 365 * 24 * 60 * 60);

/// When a feature turns itself off and back on.
///
/// Built from [`Default`] and changed field by field (the struct is `#[non_exhaustive]`, so a
/// field added later breaks nobody):
///
/// ```
/// use std::time::Duration;
/// use palisade_fallback::FeatureConfig;
///
/// let mut config = FeatureConfig::default();
/// config.failures_to_turn_off = Some(3);
/// config.cooldown = Duration::from_secs(10);
/// assert!(config.validate().is_ok());
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(default, deny_unknown_fields))]
#[non_exhaustive]
pub struct FeatureConfig {
    /// Failures within `window` that turn the feature off (default `Some(5)`); `None` (`"off"`
    /// in a configuration file): it never turns itself off, only by hand. Failures that do not
    /// count against the dependency's health (a client fault, a cancellation) are not counted.
    #[cfg_attr(feature = "serde", serde(with = "palisade_core::serde_off"))]
    pub failures_to_turn_off: Option<u32>,
    /// The window failures are counted over, sliding in tenths (default 60 s; at least 10 ns
    /// and shorter than 5,800 years).
    #[cfg_attr(feature = "serde", serde(with = "palisade_core::serde_duration"))]
    pub window: Duration,
    /// How long it stays off after turning itself off before one probe call may try it again
    /// (default 30 s; at least 1 ms, the resolution the end of an off period is kept in).
    #[cfg_attr(feature = "serde", serde(with = "palisade_core::serde_duration"))]
    pub cooldown: Duration,
    /// The longest a probe may hold the probe slot, from its admission (default 60 s; at
    /// least 1 ms). A probe still out after this long is counted as failed: the slot is
    /// freed and the cool-down starts over from the end of its hold, so that a probe that
    /// hangs (no timeout layer below the gate, a dependency that never answers) cannot keep
    /// the feature off for good. A probe that ends after its hold counts as failed however
    /// it ends. Set it above the slowest call the feature makes when healthy: a probe slower
    /// than this never turns the feature back on.
    #[cfg_attr(feature = "serde", serde(with = "palisade_core::serde_duration"))]
    pub probe_timeout: Duration,
}

impl Default for FeatureConfig {
    /// Off after 5 failures within 60 s; a probe after 30 s, given 60 s to answer.
    fn default() -> Self {
        FeatureConfig {
            failures_to_turn_off: Some(5),
            window: Duration::from_secs(60),
            cooldown: Duration::from_secs(30),
            probe_timeout: Duration::from_secs(60),
        }
    }
}

impl FeatureConfig {
    /// Checks every field.
    ///
    /// # Errors
    /// `failures_to_turn_off` must be at least 1 when set (`None`, not 0, is how a feature
    /// never turns itself off); `window` must be at least 10 ns (one per bucket of its tenths)
    /// and shorter than 5,800 years (of 365 days); `cooldown` and `probe_timeout` must each
    /// be at least one millisecond (the resolution the end of an off period and the probe's
    /// hold are kept in: a shorter cool-down would be no cool-down at all). Each error names
    /// its field and states its rule.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.failure_window(Instant::now()).map(drop)
    }

    /// The feature's failure window counting from `origin`, once every field is checked.
    fn failure_window(&self, origin: Instant) -> Result<ErrorStats, ConfigError> {
        if self.failures_to_turn_off == Some(0) {
            return Err(ConfigError::new(
                "failures_to_turn_off",
                "must be at least 1 (None, \"off\" in a configuration file, turns the rule off: the feature never turns itself off)",
            ));
        }
        // Checked here, in the words of this configuration: the failure window's own checks
        // speak of its buckets, which a feature's configuration does not set.
        if self.window < MIN_WINDOW {
            return Err(ConfigError::new(
                "window",
                "must be at least 10 ns (one nanosecond for each tenth of the window it slides in)",
            ));
        }
        if self.window >= MAX_WINDOW {
            return Err(ConfigError::new(
                "window",
                "must be shorter than 5,800 years",
            ));
        }
        if self.cooldown < Duration::from_millis(1) {
            return Err(ConfigError::new(
                "cooldown",
                "must be at least one millisecond",
            ));
        }
        if self.probe_timeout < Duration::from_millis(1) {
            return Err(ConfigError::new(
                "probe_timeout",
                "must be at least one millisecond",
            ));
        }
        ErrorStats::builder()
            .window(self.window)
            .buckets(BUCKETS)
            .build(origin)
    }
}

/// Whether a feature is on, and if not, why it is off.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum FeatureState {
    /// Calls go to the feature.
    On,
    /// Turned off by an operator ([`Feature::turn_off`]) until turned on again.
    TurnedOff,
    /// Turned off by its own failures; a probe may try it once `retry_after` has passed, and
    /// a probe that succeeds turns it back on with a clean record. A probe that fails with a
    /// failure that counts against health starts the cool-down over, and so does a probe
    /// still out after [`probe_timeout`](FeatureConfig::probe_timeout) (from the end of its
    /// hold); one answered with a failure that does not count (a rate limit, a client fault,
    /// a cancellation) gives no verdict, and the next call probes again, but not before the
    /// retry hint of a rate limit that gave one (at most a cool-down).
    AutoOff {
        /// Time left before a probe may try it.
        retry_after: Duration,
    },
}

/// One feature's line on a status page.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FeatureStatus {
    /// Its name.
    pub name: String,
    /// Its state.
    pub state: FeatureState,
    /// Failures counted in its window.
    pub recent_failures: u64,
}

/// The feature's state word: what it is (2 bits), its epoch (22 bits) and, while off by its
/// failures, when a probe may try (40 bits, ms since the feature's origin). One word, so that
/// every transition is one compare-and-swap and a gate reads the state with one load.
///
/// The epoch counts the times the feature was turned on (by hand or by a probe); every call
/// carries the epoch it was admitted in, and its outcome counts only in that epoch. A failure
/// of a call admitted before the feature was last turned on is thus never counted after it
/// (a feature back on starts with a clean record), and neither it nor a failed probe can turn
/// the feature off again once an operator has turned it on. Nothing automatic ever leaves a
/// manual off.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Word(u64);

const ON: u64 = 0;
const MANUAL_OFF: u64 = 1;
const AUTO_OFF: u64 = 2;
const STATE_BITS: u32 = 2;
const EPOCH_BITS: u32 = 22;
const EPOCH_MASK: u32 = (1 << EPOCH_BITS) - 1;
const UNTIL_SHIFT: u32 = STATE_BITS + EPOCH_BITS;
/// The latest instant a word can hold, about 34 years after the feature's origin.
const MAX_UNTIL: u64 = (1 << (64 - UNTIL_SHIFT)) - 1;

impl Word {
    fn new(state: u64, epoch: u32, until_ms: u64) -> Self {
        Word(
            state
                | u64::from(epoch & EPOCH_MASK) << STATE_BITS
                | until_ms.min(MAX_UNTIL) << UNTIL_SHIFT,
        )
    }

    fn state(self) -> u64 {
        self.0 & ((1 << STATE_BITS) - 1)
    }

    fn epoch(self) -> u32 {
        (self.0 >> STATE_BITS) as u32 & EPOCH_MASK
    }

    fn until_ms(self) -> u64 {
        self.0 >> UNTIL_SHIFT
    }

    /// On, in the epoch after this word's.
    fn turned_on(self) -> Self {
        Word::new(ON, self.epoch().wrapping_add(1), 0)
    }
}

/// A probe's hold on the probe slot: the epoch it was admitted in (the low 22 bits) and when
/// the hold ends (ms since the feature's origin, the bits above; at least 1, so that a hold is
/// never 0, the free slot's value). A probe gives back only its own hold, so a probe whose hold
/// was taken back (as timed out, or taken over by the probe of a later epoch) can neither free
/// its successor's slot nor give a verdict. Holds end later and later (a new one is taken only
/// once the last ended, was given back or is of an earlier epoch, and every hold lasts the same
/// probe timeout of at least 1 ms), and a hold taken over is of another epoch, so no hold is
/// ever mistaken for an earlier one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Hold(NonZeroU64);

impl Hold {
    fn new(epoch: u32, until_ms: u64) -> Self {
        let bits = u64::from(epoch & EPOCH_MASK) | until_ms.clamp(1, MAX_UNTIL) << EPOCH_BITS;
        Hold(NonZeroU64::new(bits).expect("a hold ends 1 ms after the origin or later"))
    }

    /// The hold in the probe slot's word, `None` while the slot is free.
    fn in_slot(bits: u64) -> Option<Self> {
        NonZeroU64::new(bits).map(Hold)
    }

    fn bits(self) -> u64 {
        self.0.get()
    }

    fn epoch(self) -> u32 {
        self.0.get() as u32 & EPOCH_MASK
    }

    fn until_ms(self) -> u64 {
        self.0.get() >> EPOCH_BITS
    }
}

struct Inner {
    name: String,
    config: FeatureConfig,
    origin: Instant,
    /// The state [`Word`]: read by every call, on a cache line of its own.
    word: CachePadded<AtomicU64>,
    /// The [`Hold`] of the probe out while the feature is off by its failures; 0 while the
    /// slot is free.
    probing: AtomicU64,
    /// Failures in the window. Cleared when the feature is turned back on; read and written
    /// only after a failure and for a status page, never on the success path.
    failures: ErrorStats,
    /// The gates waiting for their service's readiness while the feature was on (or with the
    /// probe slot), woken when it goes off so that the fallback answers them (see [`Feature::waiting`]). Locked only
    /// by a gate whose service is not ready and by a switch off, never on a call's way.
    waiters: Mutex<Vec<Weak<Waiter>>>,
}

/// Where a gate leaves its task's waker while its service is not ready.
#[derive(Debug, Default)]
pub(crate) struct Waiter(Mutex<Option<Waker>>);

impl Waiter {
    fn wake(&self) {
        let waker = self.0.lock().unwrap_or_else(PoisonError::into_inner).take();
        if let Some(waker) = waker {
            waker.wake();
        }
    }
}

impl Inner {
    fn load(&self) -> Word {
        Word(self.word.load(Ordering::Acquire))
    }

    /// Replaces `current` with `new`; the word found instead when it was not `current`.
    fn replace(&self, current: Word, new: Word) -> Result<(), Word> {
        self.word
            .compare_exchange(current.0, new.0, Ordering::AcqRel, Ordering::Acquire)
            .map(drop)
            .map_err(Word)
    }
}

/// A handle on one named feature: shared by its layers and the switchboard.
#[derive(Clone)]
pub struct Feature {
    inner: Arc<Inner>,
}

impl fmt::Debug for Feature {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Feature")
            .field("name", &self.inner.name)
            .field("state", &self.state())
            .finish()
    }
}

/// A call a gate let through: the epoch it was admitted in, and whether it is the probe.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Ticket {
    epoch: u32,
    /// The probe's hold on the probe slot; `None` for a call that is not the probe.
    hold: Option<Hold>,
}

impl Ticket {
    /// Whether the call is the probe.
    #[inline]
    pub(crate) fn is_probe(self) -> bool {
        self.hold.is_some()
    }
}

/// What a gate's `poll_ready` does, from [`Feature::readiness`].
#[derive(Debug)]
pub(crate) enum Readiness {
    /// The feature is on: ask the feature's service.
    Forward,
    /// The feature is off and this call cannot be its probe: ready at once, the call that
    /// follows is refused.
    Refuse,
    /// This call is the probe: ask the feature's service, holding the probe slot meanwhile.
    Probe(ProbeSlot),
}

/// The probe slot a gate's `poll_ready` took for the call that follows: given back when
/// dropped unless [`Feature::admit_claimed`] turned it into that call's ticket.
#[derive(Debug)]
pub(crate) struct ProbeSlot {
    feature: Feature,
    ticket: Option<Ticket>,
}

impl ProbeSlot {
    /// Whether the slot is still this gate's probe: the feature still off by its failures in
    /// the epoch the slot was taken in, and the hold not over nor taken back.
    pub(crate) fn is_current(&self) -> bool {
        self.ticket
            .is_some_and(|ticket| self.feature.is_current(ticket, Instant::now()))
    }

    /// When the slot's hold ends (the probe timeout from when it was taken); `None` past what
    /// an `Instant` can say (a probe timeout of centuries).
    pub(crate) fn ends_at(&self) -> Option<Instant> {
        let until_ms = self
            .ticket
            .and_then(|ticket| ticket.hold)
            .map_or(0, Hold::until_ms);
        self.feature
            .inner
            .origin
            .checked_add(Duration::from_millis(until_ms))
    }
}

impl Drop for ProbeSlot {
    fn drop(&mut self) {
        if let Some(ticket) = self.ticket {
            self.feature.no_verdict(ticket);
        }
    }
}

impl Feature {
    fn new(name: &str, config: FeatureConfig, origin: Instant, failures: ErrorStats) -> Self {
        Feature {
            inner: Arc::new(Inner {
                name: name.to_owned(),
                config,
                origin,
                word: CachePadded::new(AtomicU64::new(Word::new(ON, 0, 0).0)),
                probing: AtomicU64::new(0),
                failures,
                waiters: Mutex::new(Vec::new()),
            }),
        }
    }

    fn ms(&self, now: Instant) -> u64 {
        u64::try_from(now.saturating_duration_since(self.inner.origin).as_millis())
            .unwrap_or(u64::MAX)
    }

    /// `now` in whole ms since the origin, rounded up: where a period starts, so that a
    /// period counted from it (a cool-down, a probe's hold, a pacing hint) is never cut short
    /// by the part of a millisecond `now` is past [`ms`](Self::ms).
    fn ms_ceil(&self, now: Instant) -> u64 {
        let since = now.saturating_duration_since(self.inner.origin);
        let ms = self.ms(now);
        if since.subsec_nanos().is_multiple_of(1_000_000) {
            ms
        } else {
            ms.saturating_add(1)
        }
    }

    /// The feature's name.
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// Turns it on (ending an automatic or manual off): calls go to the feature again. A
    /// feature turned back on starts with a clean record: the failures counted before are
    /// forgotten, and calls let through before do not count in the new record.
    pub fn turn_on(&self) {
        let mut current = self.inner.load();
        while current.state() != ON {
            // Cleared before the new epoch is published, so that no call admitted in it sees
            // the failures counted before.
            self.clear_failures();
            match self.inner.replace(current, current.turned_on()) {
                Ok(()) => {
                    tracing::info!(target: "palisade_fallback", feature = %self.inner.name, "feature turned on");
                    return;
                }
                Err(found) => current = found,
            }
        }
    }

    /// Turns it off until [`turn_on`](Self::turn_on): every call goes to the fallback, without
    /// reaching the feature. Nothing automatic turns it back on.
    pub fn turn_off(&self) {
        let mut current = self.inner.load();
        while current.state() != MANUAL_OFF {
            match self
                .inner
                .replace(current, Word::new(MANUAL_OFF, current.epoch(), 0))
            {
                Ok(()) => {
                    tracing::info!(target: "palisade_fallback", feature = %self.inner.name, "feature turned off by hand");
                    self.wake_waiters();
                    return;
                }
                Err(found) => current = found,
            }
        }
    }

    /// Leaves `waker` where a switch off finds it: a gate whose service is not ready, while the
    /// feature is on or while it holds the probe slot, calls this with its own `waiter` (made
    /// on its first wait, `None` until then) before it returns `Pending`, so that turning the
    /// feature off (by hand or by its failures) wakes its caller to be answered by the
    /// fallback, rather than leaving it parked on a service that may never get ready. Registered once per gate; gates dropped
    /// since are forgotten at the next registration.
    pub(crate) fn waiting(&self, waiter: &mut Option<Arc<Waiter>>, waker: &Waker) {
        let slot = match waiter {
            Some(slot) => slot,
            None => {
                let slot = Arc::new(Waiter::default());
                let mut waiters = self
                    .inner
                    .waiters
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner);
                waiters.retain(|w| w.strong_count() > 0);
                waiters.push(Arc::downgrade(&slot));
                waiter.insert(slot)
            }
        };
        let mut held = slot.0.lock().unwrap_or_else(PoisonError::into_inner);
        if !held.as_ref().is_some_and(|w| w.will_wake(waker)) {
            *held = Some(waker.clone());
        }
    }

    /// How many gates the list of waiters holds, dropped ones not yet forgotten included.
    #[cfg(test)]
    pub(crate) fn waiters_listed(&self) -> usize {
        self.inner
            .waiters
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }

    /// Wakes the gates waiting for their service's readiness: the feature went off.
    fn wake_waiters(&self) {
        let waiters: Vec<Arc<Waiter>> = self
            .inner
            .waiters
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .filter_map(Weak::upgrade)
            .collect();
        for waiter in waiters {
            waiter.wake();
        }
    }

    /// Forgets the failures counted so far: the failures that turned the feature off say
    /// nothing about it once it is back on.
    fn clear_failures(&self) {
        self.inner.failures.clear();
    }

    /// Its state now.
    pub fn state(&self) -> FeatureState {
        self.state_at(Instant::now())
    }

    fn state_at(&self, now: Instant) -> FeatureState {
        let word = self.inner.load();
        match word.state() {
            ON => FeatureState::On,
            MANUAL_OFF => FeatureState::TurnedOff,
            _ => {
                let now_ms = self.ms(now);
                let mut until_ms = word.until_ms();
                // A probe out past its hold is counted as failed by the next call, the
                // cool-down starting over from the end of its hold: say so already.
                if let Some(hold) = Hold::in_slot(self.inner.probing.load(Ordering::Acquire))
                    && hold.epoch() == word.epoch()
                    && now_ms >= hold.until_ms()
                {
                    let restarted = hold
                        .until_ms()
                        .saturating_add(millis(self.inner.config.cooldown));
                    until_ms = until_ms.max(restarted);
                }
                FeatureState::AutoOff {
                    retry_after: Duration::from_millis(until_ms.saturating_sub(now_ms)),
                }
            }
        }
    }

    /// Whether it is on: calls go to the feature now.
    pub fn is_on(&self) -> bool {
        self.inner.load().state() == ON
    }

    /// What a gate's `poll_ready` does now: forward it while the feature is on; take the probe
    /// slot and forward it once the cool-down of an automatic off is over and no other probe
    /// is out; otherwise answer ready at once, the call that follows being refused.
    #[inline]
    pub(crate) fn readiness(&self) -> Readiness {
        let word = self.inner.load();
        match word.state() {
            ON => Readiness::Forward,
            AUTO_OFF => self.claim_probe(word),
            _ => Readiness::Refuse,
        }
    }

    #[cold]
    #[inline(never)]
    fn claim_probe(&self, word: Word) -> Readiness {
        match self.admit_probe(word, Instant::now()) {
            Some(ticket) => Readiness::Probe(ProbeSlot {
                feature: self.clone(),
                ticket: Some(ticket),
            }),
            None => Readiness::Refuse,
        }
    }

    /// The ticket of a call made with the probe slot its gate's `poll_ready` took: the probe,
    /// if the feature is still off by its failures in the same epoch and the slot's hold is
    /// not over; otherwise the slot is freed (a hold that is over counted as a failed probe)
    /// and the call is admitted (or not) as any other.
    pub(crate) fn admit_claimed(&self, mut slot: ProbeSlot) -> Option<Ticket> {
        match slot.ticket {
            Some(ticket) if self.is_current(ticket, Instant::now()) => {
                slot.ticket = None;
                Some(ticket)
            }
            _ => {
                drop(slot);
                self.admit()
            }
        }
    }

    /// Whether a call may go to the feature now, and as what: `None` while it is off (and,
    /// while off by its failures, unless the cool-down is over and no other probe is out).
    #[inline]
    pub(crate) fn admit(&self) -> Option<Ticket> {
        let word = self.inner.load();
        match word.state() {
            ON => Some(Ticket {
                epoch: word.epoch(),
                hold: None,
            }),
            AUTO_OFF => self.admit_probe(word, Instant::now()),
            _ => None,
        }
    }

    /// The probe's ticket, when the cool-down of `word`'s automatic off is over at `now` and
    /// the probe slot is free. A probe out past its hold is counted as failed on the way
    /// ([`probe_timed_out`](Self::probe_timed_out)): its slot is taken back, and the cool-down
    /// starts over from the end of its hold (over already, when the hold ended long ago). A
    /// probe of an earlier epoch, still out, says nothing about the feature now: its slot is
    /// taken over at once, without counting a failure, and its end gives back nothing (its
    /// hold is no longer the slot's).
    fn admit_probe(&self, word: Word, now: Instant) -> Option<Ticket> {
        let now_ms = self.ms(now);
        // Still cooling down: refused without looking at the probe slot.
        if now_ms < word.until_ms() {
            return None;
        }
        loop {
            let slot = self.inner.probing.load(Ordering::Acquire);
            // Loaded after the slot, so that a hold found there was taken in this word's
            // epoch or an earlier one, never a later one.
            let word = self.inner.load();
            if word.state() != AUTO_OFF || now_ms < word.until_ms() {
                return None;
            }
            match Hold::in_slot(slot) {
                // The probe out, of this off period, is within its time.
                Some(held) if held.epoch() == word.epoch() && now_ms < held.until_ms() => {
                    return None;
                }
                // The probe out, of this off period, ran past its hold: it failed.
                Some(held) if held.epoch() == word.epoch() => {
                    if self.give_back(held) {
                        self.probe_timed_out(held, now);
                    }
                }
                // The slot is free, or held by a probe of an earlier epoch: this call is the
                // probe, if no other call took the slot meanwhile.
                _ => {
                    let until_ms = self
                        .ms_ceil(now)
                        .saturating_add(millis(self.inner.config.probe_timeout));
                    let hold = Hold::new(word.epoch(), until_ms);
                    if self
                        .inner
                        .probing
                        .compare_exchange(slot, hold.bits(), Ordering::AcqRel, Ordering::Acquire)
                        .is_ok()
                    {
                        return Some(Ticket {
                            epoch: word.epoch(),
                            hold: Some(hold),
                        });
                    }
                    // Taken or given back meanwhile: look again.
                }
            }
        }
    }

    /// Whether the probe of `ticket` is still the feature's at `now`: off by its failures in
    /// the ticket's epoch, and the ticket's hold still the slot's and not over.
    fn is_current(&self, ticket: Ticket, now: Instant) -> bool {
        let word = self.inner.load();
        word.state() == AUTO_OFF
            && word.epoch() == ticket.epoch
            && ticket.hold.is_some_and(|hold| self.holds(hold, now))
    }

    /// Whether `hold` is the probe slot's still, and not over at `now`.
    fn holds(&self, hold: Hold, now: Instant) -> bool {
        self.inner.probing.load(Ordering::Acquire) == hold.bits() && self.ms(now) < hold.until_ms()
    }

    /// Frees the probe slot if `hold` is still its hold; whether it was.
    fn give_back(&self, hold: Hold) -> bool {
        self.inner
            .probing
            .compare_exchange(hold.bits(), 0, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
    }

    /// Ends the probe of `hold` at `now`, freeing its slot: whether its outcome counts. It
    /// does not when its hold was taken back as timed out, nor when it ran past its hold: it
    /// is then counted as failed here, however it ended.
    fn end_probe(&self, hold: Hold, now: Instant) -> bool {
        if !self.give_back(hold) {
            return false;
        }
        if self.ms(now) >= hold.until_ms() {
            self.probe_timed_out(hold, now);
            return false;
        }
        true
    }

    /// The probe of `hold` held the probe slot for the probe timeout (the slot is taken back
    /// already, by whoever found it so): counted as failed at the end of its hold, so the
    /// cool-down starts over from then, unless the feature was turned on or off by hand since.
    #[cold]
    #[inline(never)]
    fn probe_timed_out(&self, hold: Hold, now: Instant) {
        // A probe of an earlier epoch says nothing about the feature now: its slot is free,
        // and that is all.
        if self.inner.load().epoch() != hold.epoch() {
            return;
        }
        tracing::warn!(
            target: "palisade_fallback",
            feature = %self.inner.name,
            probe_timeout_ms = millis(self.inner.config.probe_timeout),
            "probe timed out: counted as failed"
        );
        self.inner.failures.record_category(Category::Timeout, now);
        self.auto_off(hold.epoch(), hold.until_ms());
    }

    /// A call that says nothing about the feature, finished or dropped (a failure that does
    /// not count against its health and is no success either): a probe frees its slot,
    /// without a verdict, unless it ran past its hold (then it failed).
    #[inline]
    pub(crate) fn no_verdict(&self, ticket: Ticket) {
        if let Some(hold) = ticket.hold {
            self.end_probe(hold, Instant::now());
        }
    }

    /// A call the dependency answered by pacing its callers (a rate limit with a retry hint):
    /// no verdict, as [`no_verdict`](Self::no_verdict), but a probe so answered also holds
    /// the next probe back for the hint, at most a cool-down, so that a feature off by its
    /// failures does not send its dependency a probe after every refusal while that
    /// dependency asks its callers to wait. No failure is counted.
    #[cold]
    #[inline(never)]
    pub(crate) fn paced(&self, ticket: Ticket, hint: Duration) {
        let Some(hold) = ticket.hold else {
            return;
        };
        let now = Instant::now();
        // The next probe's earliest start is published before the slot is freed: a gate that
        // finds the slot free then finds the hold too.
        if self.holds(hold, now) {
            let wait = hint.min(self.inner.config.cooldown);
            let until_ms = self.ms_ceil(now).saturating_add(millis(wait));
            let mut current = self.inner.load();
            while current.state() == AUTO_OFF
                && current.epoch() == ticket.epoch
                && current.until_ms() < until_ms
            {
                match self
                    .inner
                    .replace(current, Word::new(AUTO_OFF, ticket.epoch, until_ms))
                {
                    Ok(()) => break,
                    Err(found) => current = found,
                }
            }
        }
        self.end_probe(hold, now);
    }

    /// Counts a finished call's outcome: `failure` is the class of a failure that counts
    /// against the feature's health, `None` for a success.
    pub(crate) fn outcome(&self, failure: Option<Class>, ticket: Ticket) {
        self.outcome_at(failure, ticket, Instant::now());
    }

    fn outcome_at(&self, failure: Option<Class>, ticket: Ticket, now: Instant) {
        if let Some(hold) = ticket.hold
            && !self.end_probe(hold, now)
        {
            return;
        }
        match failure {
            None if ticket.is_probe() => self.probe_succeeded(ticket.epoch),
            None => {}
            // A call admitted before the feature was last turned on says nothing about it now.
            Some(_) if self.inner.load().epoch() != ticket.epoch => {}
            Some(class) => {
                let failures = &self.inner.failures;
                failures.record(class, now);
                let limit = self.inner.config.failures_to_turn_off;
                if ticket.is_probe()
                    || limit.is_some_and(|limit| failures.total(now) >= u64::from(limit))
                {
                    self.auto_off(ticket.epoch, self.ms_ceil(now));
                }
            }
        }
    }

    /// A probe of the off period of `epoch` succeeded: back on, with a clean record, unless
    /// an operator acted meanwhile.
    fn probe_succeeded(&self, epoch: u32) {
        let mut current = self.inner.load();
        while current.state() == AUTO_OFF && current.epoch() == epoch {
            self.clear_failures();
            match self.inner.replace(current, current.turned_on()) {
                Ok(()) => {
                    tracing::info!(target: "palisade_fallback", feature = %self.inner.name, "feature back on after a successful probe");
                    return;
                }
                Err(found) => current = found,
            }
        }
    }

    /// Off by its failures in `epoch` from `at_ms` (ms since the origin; again, for a failed
    /// probe: the cool-down starts over), unless the feature was turned off by hand or turned
    /// on since. An off period that ends later already is kept (a probe counted as failed at
    /// the end of its hold, after a later failure).
    fn auto_off(&self, epoch: u32, at_ms: u64) {
        let cooldown_ms = millis(self.inner.config.cooldown);
        let off = Word::new(AUTO_OFF, epoch, at_ms.saturating_add(cooldown_ms));
        let mut current = self.inner.load();
        while current.epoch() == epoch && current.state() != MANUAL_OFF {
            if current.state() == AUTO_OFF && current.until_ms() >= off.until_ms() {
                return;
            }
            match self.inner.replace(current, off) {
                Ok(()) => {
                    if current.state() == ON {
                        tracing::warn!(target: "palisade_fallback", feature = %self.inner.name, cooldown_ms, "feature turned itself off after its failures");
                        self.wake_waiters();
                    }
                    return;
                }
                Err(found) => current = found,
            }
        }
    }

    fn status(&self) -> FeatureStatus {
        let now = Instant::now();
        FeatureStatus {
            name: self.inner.name.clone(),
            state: self.state_at(now),
            recent_failures: self.inner.failures.total(now),
        }
    }
}

/// Named features, for a status page and for operators.
#[derive(Clone, Default)]
pub struct Switchboard {
    features: Arc<Mutex<Vec<Feature>>>,
}

impl fmt::Debug for Switchboard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.snapshot()).finish()
    }
}

impl Switchboard {
    /// An empty switchboard.
    pub fn new() -> Self {
        Self::default()
    }

    /// The feature named `name`, registered with the default [`FeatureConfig`] on first use
    /// (off after 5 failures within 60 s; a probe after 30 s). A feature registered before
    /// under that name keeps its configuration.
    pub fn feature(&self, name: &str) -> Feature {
        self.feature_with(name, FeatureConfig::default())
            .expect("the default feature configuration is valid")
    }

    /// The feature named `name`, registered with `config` on first use. A feature registered
    /// before under that name keeps its configuration.
    ///
    /// # Errors
    /// A `config` that fails [`FeatureConfig::validate`] (checked even when the name is
    /// registered already).
    pub fn feature_with(&self, name: &str, config: FeatureConfig) -> Result<Feature, ConfigError> {
        let now = Instant::now();
        let failures = config.failure_window(now)?;
        let mut features = self.features.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(f) = features.iter().find(|f| f.inner.name == name) {
            return Ok(f.clone());
        }
        let feature = Feature::new(name, config, now, failures);
        features.push(feature.clone());
        Ok(feature)
    }

    /// Every feature's state, for a status page.
    pub fn snapshot(&self) -> Vec<FeatureStatus> {
        let features = self
            .features
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        features.iter().map(Feature::status).collect()
    }
}

#[cfg(all(test, not(palisade_loom)))]
mod tests {
    use super::*;

    #[test]
    fn a_word_holds_its_three_fields_apart() {
        let word = Word::new(AUTO_OFF, EPOCH_MASK, MAX_UNTIL);
        assert_eq!(
            (word.state(), word.epoch(), word.until_ms()),
            (AUTO_OFF, EPOCH_MASK, MAX_UNTIL)
        );
        let word = Word::new(MANUAL_OFF, 5, 7);
        assert_eq!(
            (word.state(), word.epoch(), word.until_ms()),
            (MANUAL_OFF, 5, 7)
        );
        // An instant past the word's range saturates; the epoch wraps.
        assert_eq!(Word::new(AUTO_OFF, 1, u64::MAX).until_ms(), MAX_UNTIL);
        assert_eq!(MAX_UNTIL, (1 << 40) - 1);
        let on = Word::new(AUTO_OFF, EPOCH_MASK, 9).turned_on();
        assert_eq!((on.state(), on.epoch(), on.until_ms()), (ON, 0, 0));
        let on = Word::new(MANUAL_OFF, 3, 9).turned_on();
        assert_eq!((on.state(), on.epoch(), on.until_ms()), (ON, 4, 0));
    }
}

#[cfg(all(test, palisade_loom))]
mod loom_tests;
