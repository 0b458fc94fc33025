//! The breaker's decision logic: a lock-free state machine over a few atomics. It takes the
//! time as milliseconds since the breaker's origin and does no I/O, so it is tested without a
//! runtime (and under loom).

use std::fmt;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use palisade_core::stripe;
use palisade_core::sync::CachePadded;
use palisade_core::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};

use crate::config::{BreakerConfig, Window};
use crate::reconfigure::{Reconfigured, Reset};
use crate::window::{CountWindow, Counts, RecentWindow, TimeWindow};

/// The breaker's state. "Open" means open like a circuit: **rejecting** calls (some libraries
/// use the word the other way round). Defined with the breaker's error in
/// [`palisade_core::failure`].
pub use palisade_core::failure::BreakerState as State;

/// A configured duration or a server's hint may be as long as a [`Duration`] gets, and must
/// not wrap round to a short one: whole milliseconds, saturating.
pub(crate) use palisade_core::time::millis;

/// The state whose code (`state as u64`) is in the low 3 bits of `word`.
fn from_code(word: u64) -> State {
    match word & 0b111 {
        0 => State::Closed,
        1 => State::Open,
        2 => State::HalfOpen,
        3 => State::Isolated,
        _ => State::Bypassed,
    }
}

/// Something that happened to a breaker. `#[non_exhaustive]`: an event may be added.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Event {
    /// It moved from one state to another.
    Transition {
        /// The state it left.
        from: State,
        /// The state it entered.
        to: State,
    },
    /// A call was rejected.
    Rejected {
        /// The state that rejected it.
        state: State,
    },
}

/// Hears a breaker's [`Event`]s. Called on the thread that caused the event, never while a
/// lock is held (the breaker takes none); a panicking listener is caught and logged.
pub trait Listener: Send + Sync {
    /// One event of the breaker named `name`.
    fn on_event(&self, name: &str, event: Event);
}

/// What the breaker admitted: the generation it belongs to (bits 1..) and whether it is a
/// probe (bit 0), in one word so the response future carries 8 bytes for it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Ticket(u64);

impl Ticket {
    #[inline]
    const fn new(generation: u64, probe: bool) -> Ticket {
        Ticket((generation << 1) | probe as u64)
    }

    #[inline]
    pub(crate) const fn generation(self) -> u64 {
        self.0 >> 1
    }

    /// Whether this is a half-open probe (which holds a probe slot until it ends).
    #[inline]
    pub(crate) const fn probe(self) -> bool {
        self.0 & 1 == 1
    }
}

/// Why a call was not admitted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Refused {
    pub(crate) state: State,
    /// Milliseconds until the breaker will probe again, when known.
    pub(crate) retry_after_ms: Option<u64>,
    /// The name of the breaker that refused (a reference count, not a copy).
    pub(crate) breaker: Arc<str>,
}

/// A refusal decided ([`Core::decide`]) and not yet delivered: a service reserves it in
/// `poll_ready` and fails the call with it at `call`, counting it as a rejection only then
/// ([`Core::reject`]), and only if it still stands ([`Core::still_refuses`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Refusal {
    pub(crate) refused: Refused,
    /// The state word the refusal was decided on: the breaker has moved since when it differs.
    word: u64,
}

impl Refusal {
    /// The refusal and the state word it was decided on, apart: a service keeps the word
    /// beside its reservation so that the reservation stays as small as a `Refused`.
    pub(crate) fn into_parts(self) -> (Refused, u64) {
        (self.refused, self.word)
    }

    /// A refusal put back together from [`into_parts`](Self::into_parts).
    pub(crate) fn from_parts(refused: Refused, word: u64) -> Self {
        Refusal { refused, word }
    }
}

/// How a call ended, as far as the breaker cares.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Outcome {
    Success,
    /// A failure that counts against health, with the server's retry hint if any.
    Failure(Option<Duration>),
    /// Neither (client faults, ignored errors, rate limits, cancellation by policy).
    Neutral,
}

/// The rate window, shared between configurations that measure over the same window (so a
/// reconfiguration that keeps the window keeps its outcomes).
#[derive(Clone, Debug)]
enum Rates {
    None,
    Count(Arc<CountWindow>),
    Time(Arc<TimeWindow>),
    /// The ring of the last `calls` outcomes, shared; how its last span is judged (`within`
    /// in ms, `min_calls`) is this configuration's, beside it, so that a reconfiguration
    /// changing only those keeps the outcomes (read where the window pointer already is).
    Recent(Arc<RecentWindow>, u64, u32),
}

impl Rates {
    /// A new, empty window for `cfg` (none when no rate rule is configured).
    fn new(cfg: &BreakerConfig) -> Rates {
        if cfg.failure_rate.is_none() && cfg.slow_call_rate.is_none() {
            return Rates::None;
        }
        match cfg.window {
            Window::Count(n) => Rates::Count(Arc::new(CountWindow::new(n as usize))),
            Window::Recent {
                calls,
                within,
                min_calls,
            } => Rates::Recent(
                Arc::new(RecentWindow::new(calls as usize)),
                millis(within),
                min_calls,
            ),
            Window::Time { span, buckets } => Rates::Time(Arc::new(TimeWindow::new(
                buckets as usize,
                u64::try_from(span.as_millis() / u128::from(buckets)).unwrap_or(u64::MAX),
            ))),
        }
    }

    /// Whether recording another success that was not slow would change nothing.
    fn all_successes(&self) -> bool {
        match self {
            Rates::None => true,
            Rates::Count(w) => w.all_successes(),
            Rates::Recent(w, ..) => w.all_successes(),
            Rates::Time(_) => false,
        }
    }
}

/// What a configuration decides: the configuration itself and the windows it measures over.
/// Swapped whole by a reconfiguration; read on the slow paths only (failures, probes,
/// transitions), never by a closed breaker's successful call.
#[derive(Debug)]
pub(crate) struct Live {
    pub(crate) cfg: BreakerConfig,
    rates: Rates,
    /// The adaptive throttle's window: each request accepted (a success) or not (a failure,
    /// or refused by the throttle itself).
    throttle: Option<Arc<CountWindow>>,
}

impl Live {
    /// Which of [`QUIET_RECORD`] and [`QUIET_ADMIT`] hold for these windows now.
    fn quiet(&self) -> u64 {
        if !self
            .throttle
            .as_deref()
            .is_none_or(CountWindow::all_successes)
        {
            return 0;
        }
        QUIET_ADMIT
            | if self.rates.all_successes() {
                QUIET_RECORD
            } else {
                0
            }
    }
}

/// In [`Core::quiet`]: recording a success that was not slow, while closed, changes no window
/// (there is none, or each is full of such successes), so the happy path only counts it.
const QUIET_RECORD: u64 = 1;
/// What [`Core::throttled`] decided for a request.
enum Throttled {
    /// Admitted, as far as the throttle goes.
    No,
    /// Refused locally.
    Refused,
    /// The breaker was opened instead (or moved on meanwhile): look at its state again.
    Tripped,
}

/// In [`Core::quiet`]: the throttle refuses nothing (there is none, or its window holds only
/// accepted requests), so admitting a call while closed reads nothing else.
const QUIET_ADMIT: u64 = 2;
/// In [`Core::quiet`]: one version (the bits above the two flags).
const VERSION: u64 = 4;

/// The shortest open period: the breaker's clock counts whole milliseconds (see
/// [`Core::open_period`]).
const MIN_OPEN: Duration = Duration::from_millis(1);

/// The seconds-free encoding of "no slow-call threshold" in [`Core::slow_ns`].
const NO_LIMIT: u64 = u64::MAX;

/// Bits of `open_until` below the end of the open period that tag the trip that wrote it.
const UNTIL_TAG_BITS: u32 = 16;

/// `open_until`'s value for an open period that ends at or past 2^48 ms (8 900 years) from
/// the origin: kept untagged, as "never" (`u64::MAX`), the saturated end.
const FOREVER: u64 = u64::MAX;

/// The end of the open period (ms since origin) in a value of `open_until`.
const fn until_of(value: u64) -> u64 {
    if value == FOREVER {
        FOREVER
    } else {
        value >> UNTIL_TAG_BITS
    }
}

/// The shared state of one breaker.
pub(crate) struct Core {
    pub(crate) name: Arc<str>,
    /// The configuration and its windows (see [`Live`]).
    live: ArcSwap<Live>,
    /// [`QUIET_RECORD`] and [`QUIET_ADMIT`], and a version (bits 2..) bumped whenever a
    /// window changes in a way that may end the quiet: the hot path reads this word instead of
    /// the windows. A flag is set only by a compare-exchange from the version read before the
    /// windows were looked at, so a change made meanwhile (which bumps the version after it
    /// happened) always wins: the flags never claim quiet for windows that are not.
    quiet: AtomicU64,
    /// Whether any rule reads call durations (a slow-call threshold or a cancel policy with a
    /// duration): only then does a call read the clock when it starts.
    timed: AtomicBool,
    /// The slow-call threshold in nanoseconds, [`NO_LIMIT`] when none.
    slow_ns: AtomicU64,
    /// Serialises reconfigurations (never taken by a call).
    reconfiguring: palisade_core::sync::Mutex<()>,
    /// Generation (bits 3..) and state (bits 0..3).
    word: AtomicU64,
    /// When the open period ends, ms since origin, above the tag of the trip that wrote it
    /// (see [`Core::tag_until`]); read with [`until_of`].
    open_until: AtomicU64,
    /// Counts the trips, for their tags.
    trips: AtomicU64,
    /// When the current state was entered, ms since origin.
    entered: AtomicU64,
    /// When the breaker last opened from closed (or bypassed), ms since origin: the start of
    /// the outage its close reports (written on transitions only).
    opened: AtomicU64,
    reopens: AtomicU32,
    consecutive: AtomicU32,
    /// Whether the dependency has answered a call since the breaker was made: a success
    /// recorded while closed, or the probes of a close. Until then the throttle refuses
    /// nothing (see [`Core::throttles`]).
    answered: AtomicBool,
    /// When the throttle first found its window without an accepted request, ms since origin
    /// plus one; 0 while it holds one (see [`Core::throttled`]).
    silent_since: AtomicU64,
    /// Probes in flight, tagged with the generation they belong to (high 32 bits), so a
    /// count from an earlier half-open period is never mistaken for this one's.
    probes: AtomicU64,
    /// Successful probes, tagged the same way, and whether one of them claimed the close
    /// ([`CLOSING`]).
    probe_successes: AtomicU64,
    /// When the latest probe was admitted, ms since origin (never decreases). Written before
    /// the probe's slot is taken, so a caller that finds every slot taken reads a time no
    /// earlier than any probe in flight was admitted.
    probe_since: AtomicU64,
    rng: AtomicU64,
    /// Mixed into the seed: 0 for a breaker of its own (its draws are the seed's), a hash of
    /// its name for a per-key breaker, so that the keys' jitters differ (see [`Core::salted`]).
    salt: u64,
    /// Successes per stripe (the happy path writes only its own cache line): a power of two
    /// of them, [`stripe::count`].
    successes: Box<[CachePadded<AtomicU64>]>,
    failures: AtomicU64,
    rejections: AtomicU64,
    pub(crate) listeners: Vec<Arc<dyn Listener>>,
}

impl fmt::Debug for Core {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Core")
            .field("name", &self.name)
            .field("state", &self.state())
            .finish_non_exhaustive()
    }
}

const TAG_MASK: u64 = 0xffff_ffff;

/// In [`Core::probe_successes`]' count (its low 32 bits): set by the first successful probe of
/// a generation to reach the success threshold, which then closes the breaker. Only that one
/// clears what the close forgets (see `close_from`), so a probe reaching the threshold later,
/// whose close would lose its compare-exchange, never clears what a call admitted after the
/// close recorded meanwhile.
const CLOSING: u64 = 1 << 31;
/// The successful probes themselves, below [`CLOSING`].
const PROBE_SUCCESSES: u64 = CLOSING - 1;

/// `probe_successes` (`p`) after one more successful probe of the generation tagged `tag`
/// (counting from none when `p` is another generation's), [`CLOSING`] set from when the count
/// reaches `threshold`. Saturating.
fn probe_succeeded(p: u64, tag: u64, threshold: u64) -> u64 {
    let p = if p >> 32 == tag { p } else { tag << 32 };
    let count = ((p & PROBE_SUCCESSES) + 1).min(PROBE_SUCCESSES);
    let closing = if count >= threshold.min(PROBE_SUCCESSES) {
        CLOSING
    } else {
        p & CLOSING
    };
    (tag << 32) | closing | count
}

const fn pack(generation: u64, state: State) -> u64 {
    (generation << 3) | state as u64
}

impl Core {
    pub(crate) fn new(
        name: Arc<str>,
        cfg: BreakerConfig,
        listeners: Vec<Arc<dyn Listener>>,
    ) -> Core {
        let live = Live {
            rates: Rates::new(&cfg),
            throttle: cfg
                .throttle
                .map(|t| Arc::new(CountWindow::new(t.window as usize))),
            cfg,
        };
        // The state gauge has a series from the start: a dashboard shows a breaker that never
        // opened as closed, not as missing.
        palisade_core::metrics::breaker_state(&name, 0);
        Core {
            name,
            quiet: AtomicU64::new(live.quiet()),
            timed: AtomicBool::new(timed(&cfg)),
            slow_ns: AtomicU64::new(slow_ns(&cfg)),
            live: ArcSwap::from_pointee(live),
            reconfiguring: palisade_core::sync::Mutex::new(()),
            word: AtomicU64::new(pack(0, State::Closed)),
            open_until: AtomicU64::new(0),
            trips: AtomicU64::new(0),
            entered: AtomicU64::new(0),
            opened: AtomicU64::new(0),
            reopens: AtomicU32::new(0),
            consecutive: AtomicU32::new(0),
            answered: AtomicBool::new(false),
            silent_since: AtomicU64::new(0),
            probes: AtomicU64::new(0),
            probe_successes: AtomicU64::new(0),
            probe_since: AtomicU64::new(0),
            rng: AtomicU64::new(cfg.seed),
            salt: 0,
            successes: (0..stripe::count())
                .map(|_| CachePadded::new(AtomicU64::new(0)))
                .collect(),
            failures: AtomicU64::new(0),
            rejections: AtomicU64::new(0),
            listeners,
        }
    }

    /// This breaker with its random draws salted by its name (FNV-1a: the same name gives the
    /// same draws in every run): the per-key breakers of one layer share its seed, and would
    /// otherwise jitter alike, so that children a parent trips together would all probe in the
    /// same millisecond. Kept across a reconfiguration that changes the seed.
    pub(crate) fn salted(mut self) -> Core {
        let salt = self.name.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
        });
        self.salt = salt;
        let seed = self.live.load().cfg.seed;
        self.rng.store(seed ^ salt, Ordering::Relaxed);
        self
    }

    /// This breaker, made `now` (ms since its origin) rather than at its origin: it has been
    /// closed since then. For a breaker sharing an older origin (a per-key breaker measures
    /// time from its layer's creation, so that the layer compares every key on one clock), so
    /// that its [`time_in_state`](crate::Metrics::time_in_state) starts at its creation.
    pub(crate) fn made_at(self, now: u64) -> Core {
        self.entered.store(now, Ordering::Relaxed);
        self
    }

    /// The success counter of stripe `stripe` (taken modulo the number of counters).
    #[inline]
    fn successes(&self, stripe: usize) -> &AtomicU64 {
        &self.successes[stripe & (self.successes.len() - 1)]
    }

    /// The configuration and windows now (slow paths only).
    pub(crate) fn live(&self) -> arc_swap::Guard<Arc<Live>> {
        self.live.load()
    }

    /// Whether a call reads the clock when it starts (see [`Core::timed`]).
    #[inline]
    pub(crate) fn timed(&self) -> bool {
        self.timed.load(Ordering::Relaxed)
    }

    /// The slow-call threshold, if any.
    #[inline]
    pub(crate) fn slow_call_duration(&self) -> Option<Duration> {
        match self.slow_ns.load(Ordering::Relaxed) {
            NO_LIMIT => None,
            ns => Some(Duration::from_nanos(ns)),
        }
    }

    /// The state word now, as admission reads it: an Open breaker whose period ended still
    /// reads Open until a call comes and moves it to HalfOpen. What a reader outside is told
    /// is [`Core::observed`].
    pub(crate) fn state(&self) -> State {
        from_code(self.word.load(Ordering::Acquire))
    }

    /// The state as the next call would meet it, and the time left in the open period (ms)
    /// exactly when that state is Open: what [`BreakerHandle::state`](crate::BreakerHandle::state)
    /// and [`BreakerHandle::metrics`](crate::BreakerHandle::metrics) report. A breaker whose
    /// word is Open but whose open period is over reads HalfOpen, since its next call is a
    /// probe; the transition itself still waits for that call (nothing is changed, counted,
    /// logged or announced here). `now` is read only while the word is Open.
    pub(crate) fn observed(&self, now: impl FnOnce() -> u64) -> (State, Option<u64>) {
        let state = self.state();
        if state != State::Open {
            return (state, None);
        }
        // The end of the period is published before the state (see `trip`): whoever sees
        // Open sees it.
        match until_of(self.open_until.load(Ordering::Acquire))
            .checked_sub(now())
            .filter(|&left| left > 0)
        {
            Some(left) => (State::Open, Some(left)),
            None => (State::HalfOpen, None),
        }
    }

    /// Admits a call or refuses it, counting a refusal as a rejection at once. `now` is read
    /// only when the state needs it.
    #[inline]
    pub(crate) fn admit(&self, now: impl Fn() -> u64) -> Result<Ticket, Refused> {
        self.decide(now)
            .map_err(|refusal| self.reject(refusal.refused))
    }

    /// Admits a call or decides to refuse it, without counting the refusal: see [`Refusal`].
    /// `now` is read only when the state needs it.
    #[inline]
    pub(crate) fn decide(&self, now: impl Fn() -> u64) -> Result<Ticket, Refusal> {
        loop {
            let word = self.word.load(Ordering::Acquire);
            let generation = word >> 3;
            match from_code(word) {
                State::Closed => {
                    if self.quiet.load(Ordering::Relaxed) & QUIET_ADMIT == 0 {
                        match self.throttled(word, &now) {
                            Throttled::No => {}
                            Throttled::Refused => {
                                return Err(self.refusal(word, State::Closed, None));
                            }
                            // Open now (or moved on meanwhile): judged again as it stands.
                            Throttled::Tripped => continue,
                        }
                    }
                    return Ok(Ticket::new(generation, false));
                }
                State::Bypassed => {
                    return Ok(Ticket::new(generation, false));
                }
                State::Isolated => return Err(self.refusal(word, State::Isolated, None)),
                State::Open => {
                    let now = now();
                    let until = until_of(self.open_until.load(Ordering::Acquire));
                    if now < until {
                        return Err(self.refusal(word, State::Open, Some(until - now)));
                    }
                    // The open period is over: the first caller to see it starts probing.
                    self.transition(word, State::HalfOpen, now);
                }
                State::HalfOpen => {
                    let tag = generation & TAG_MASK;
                    let live = self.live.load();
                    let max = u64::from(live.cfg.half_open_probes);
                    let mut clock = None;
                    let mut p = self.probes.load(Ordering::Acquire);
                    loop {
                        let count = if p >> 32 == tag { p & TAG_MASK } else { 0 };
                        if count >= max {
                            break;
                        }
                        // The admission time goes out before the slot is taken (see
                        // `probe_since`).
                        let t = *clock.get_or_insert_with(&now);
                        self.probe_since.fetch_max(t, Ordering::AcqRel);
                        match self.probes.compare_exchange(
                            p,
                            (tag << 32) | (count + 1),
                            Ordering::AcqRel,
                            Ordering::Acquire,
                        ) {
                            // If the breaker moves on meanwhile, this ticket's outcome is
                            // ignored and its slot is given back to a generation nobody
                            // counts any more.
                            Ok(_) => return Ok(Ticket::new(generation, true)),
                            Err(actual) => p = actual,
                        }
                    }
                    // Every slot is taken. Probes that have held them for the probe timeout
                    // are counted as failed: the breaker re-opens, and their own outcomes,
                    // whenever they come, belong to a generation nobody counts any more.
                    let since = self.probe_since.load(Ordering::Acquire);
                    let t = *clock.get_or_insert_with(&now);
                    if t.saturating_sub(since) >= millis(live.cfg.probe_timeout) {
                        self.probes_timed_out(word, t, &live.cfg);
                        continue;
                    }
                    // The probes in flight decide within about one open period: come back
                    // then, spread so that the refused do not return together.
                    let spread = 0.5 + self.next_random();
                    let hint =
                        Duration::try_from_secs_f64(live.cfg.open_duration.as_secs_f64() * spread)
                            .map_or(u64::MAX, millis);
                    return Err(self.refusal(word, State::HalfOpen, Some(hint)));
                }
            }
        }
    }

    /// Whether the adaptive throttle refuses this request (recorded in its window as a
    /// request not accepted), when its window is not all accepted requests; or opens the
    /// breaker instead, from `word` (closed), when the dependency has accepted nothing for a
    /// while.
    ///
    /// A throttle whose window holds no accepted request refuses almost everything
    /// (`requests / (requests + 1)`), and what it lets through is then the only probe of the
    /// dependency: one request in a hundred, seconds apart at a few requests a second, while
    /// the failure rate, starved of outcomes, never opens the breaker. Once the window has
    /// held no accepted request for the longest open period (`max_open_duration`), the
    /// breaker opens instead and probes on its clock, at least as often as an open period
    /// ends.
    #[cold]
    #[inline(never)]
    fn throttled(&self, word: u64, now: &dyn Fn() -> u64) -> Throttled {
        let version = self.quiet.load(Ordering::Acquire);
        let live = self.live.load();
        let Some(w) = &live.throttle else {
            self.settle(version, &live, false);
            return Throttled::No;
        };
        if w.all_successes() || !self.throttles(w, &live.cfg) {
            self.settle(version, &live, false);
            return Throttled::No;
        }
        let counts = w.counts();
        if counts.failures == counts.calls {
            let t = now().saturating_add(1);
            let since = self.silent_since.load(Ordering::Relaxed);
            if since == 0 {
                let _ =
                    self.silent_since
                        .compare_exchange(0, t, Ordering::Relaxed, Ordering::Relaxed);
            } else if t.saturating_sub(since) >= millis(live.cfg.max_open_duration) {
                if self.trip(word, None, t - 1, false) {
                    tracing::debug!(
                        target: "palisade_breaker",
                        breaker = %self.name,
                        silent_ms = t.saturating_sub(since),
                        "nothing accepted in the throttle's window: opened, to probe instead"
                    );
                }
                return Throttled::Tripped;
            }
        }
        w.record(true, false);
        self.settle(version, &live, true);
        Throttled::Refused
    }

    /// Whether the adaptive throttle refuses this request: with probability
    /// `max(0, (requests − k × accepts) / (requests + 1))` over its window, once the window
    /// holds at least a fifth of its size and the dependency has answered once.
    fn throttles(&self, w: &CountWindow, cfg: &BreakerConfig) -> bool {
        let Some(t) = cfg.throttle else {
            return false;
        };
        let counts = w.counts();
        // A window too empty to judge (a client that sends little, a breaker that just
        // closed) throttles nothing: two failures are not a trend. Under a fifth of its size,
        // compared exactly (`window / 5` would round down, and a window of 9 act on one
        // request); an empty window is always under it, as `window` is at least 1.
        if u64::from(counts.calls) * 5 < u64::from(t.window) {
            return false;
        }
        // Nor does it refuse anything before the dependency has answered once (since the
        // breaker was made; a close counts, its probes having answered). Each refusal is an
        // outcome the failure rate never sees, and a dependency that has answered nothing is
        // the rate's to judge: a throttle acting first would starve the rate and keep the
        // breaker closed, refusing 95 to 99 % of requests locally and letting one through in
        // every hundred or so, which would also be all the probing it got once it recovered
        // (seconds, at a few requests a second), instead of opening it and probing on the open
        // period's clock.
        if !self.answered.load(Ordering::Relaxed) {
            return false;
        }
        let requests = f64::from(counts.calls);
        let accepts = f64::from(counts.calls.saturating_sub(counts.failures));
        let p = (requests - t.k * accepts) / (requests + 1.0);
        p > 0.0 && self.next_random() < p
    }

    /// Re-opens a half-open breaker whose probes have held every slot for the probe timeout,
    /// as a failed probe would.
    #[cold]
    #[inline(never)]
    fn probes_timed_out(&self, word: u64, now: u64, cfg: &BreakerConfig) {
        if self.trip(word, None, now, true) {
            // A failed probe, as quiet as the others (the re-opening says so at `DEBUG`).
            tracing::debug!(
                target: "palisade_breaker",
                breaker = %self.name,
                probe_timeout_ms = millis(cfg.probe_timeout),
                "half-open probe timed out: counted as failed"
            );
        }
    }

    /// A refusal in `state`, decided on `word`, not counted yet.
    fn refusal(&self, word: u64, state: State, retry_after_ms: Option<u64>) -> Refusal {
        Refusal {
            refused: Refused {
                state,
                retry_after_ms,
                breaker: self.name.clone(),
            },
            word,
        }
    }

    /// Counts a refusal as a rejection (the counter, the metric, the listeners' event) as a
    /// call is failed with it.
    #[cold]
    #[inline(never)]
    pub(crate) fn reject(&self, refused: Refused) -> Refused {
        self.rejections.fetch_add(1, Ordering::Relaxed);
        palisade_core::metrics::breaker_rejected(&self.name, refused.state.as_str());
        self.emit(Event::Rejected {
            state: refused.state,
        });
        refused
    }

    /// Whether a refusal decided earlier still stands: the breaker has not moved since (no
    /// transition, and an open period not over yet, whose time left is then brought up to
    /// date in `refusal`). When it does not, the call must be decided again. Reads the clock
    /// only for a refusal made while open.
    #[cold]
    #[inline(never)]
    pub(crate) fn still_refuses(&self, refusal: &mut Refusal, now: impl Fn() -> u64) -> bool {
        if self.word.load(Ordering::Acquire) != refusal.word {
            return false;
        }
        if refusal.refused.state == State::Open {
            // Nobody may have looked since the open period ended: the state word still says
            // Open, but the next call is a probe.
            let now = now();
            let until = until_of(self.open_until.load(Ordering::Acquire));
            if now >= until {
                return false;
            }
            refusal.refused.retry_after_ms = Some(until - now);
        }
        true
    }

    /// Whether the breaker is still in the state (the same generation of it) that admitted
    /// `ticket`: one relaxed load, so a call whose admission went stale between `poll_ready`
    /// and `call` is decided again.
    #[inline]
    pub(crate) fn admitted_as(&self, ticket: Ticket) -> bool {
        self.word.load(Ordering::Relaxed) >> 3 == ticket.generation()
    }

    /// How much longer the breaker rejects calls if left alone: the time left in its open
    /// period, `u64::MAX` while isolated; `None` when it admits calls (closed, bypassed,
    /// half-open, or open with its period over).
    pub(crate) fn rejecting_for(&self, now: u64) -> Option<u64> {
        match self.observed(|| now) {
            (State::Isolated, _) => Some(u64::MAX),
            (_, open_for) => open_for,
        }
    }

    /// Gives a probe's slot back (on completion or drop).
    pub(crate) fn release_probe(&self, ticket: Ticket) {
        let tag = ticket.generation() & TAG_MASK;
        let _ = self
            .probes
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |p| {
                (p >> 32 == tag && p & TAG_MASK > 0).then(|| p - 1)
            });
    }

    /// Records how an admitted call ended. `slow` is whether it was slow; `stripe` picks the
    /// success counter; `now` is read only when a decision needs it.
    #[inline]
    pub(crate) fn record(
        &self,
        ticket: Ticket,
        outcome: Outcome,
        slow: bool,
        stripe: usize,
        now: impl Fn() -> u64,
    ) {
        // The happy path: a success admitted while closed that changes no window (there is
        // none, or a count window already full of plain successes, where recording one more
        // replaces a success with a success: the quiet flag says so). Count it, clear a failure
        // streak if there is one, and nothing else: no shared write while the dependency is
        // healthy.
        if !ticket.probe()
            && outcome == Outcome::Success
            && !slow
            && self.quiet.load(Ordering::Relaxed) & QUIET_RECORD != 0
            && self.word.load(Ordering::Acquire) == pack(ticket.generation(), State::Closed)
        {
            self.successes(stripe).fetch_add(1, Ordering::Relaxed);
            if self.consecutive.load(Ordering::Relaxed) != 0 {
                self.consecutive.store(0, Ordering::Relaxed);
            }
            return;
        }
        self.record_slow(ticket, outcome, slow, stripe, &now);
    }

    #[cold]
    #[inline(never)]
    fn record_slow(
        &self,
        ticket: Ticket,
        outcome: Outcome,
        slow: bool,
        stripe: usize,
        now: &dyn Fn() -> u64,
    ) {
        if ticket.probe() {
            self.release_probe(ticket);
        }
        match outcome {
            Outcome::Success => {
                self.successes(stripe).fetch_add(1, Ordering::Relaxed);
            }
            Outcome::Failure(_) => {
                self.failures.fetch_add(1, Ordering::Relaxed);
            }
            Outcome::Neutral => return,
        }
        let word = self.word.load(Ordering::Acquire);
        if word >> 3 != ticket.generation() {
            // Admitted in an earlier state: what it says is out of date.
            return;
        }
        let failure = matches!(outcome, Outcome::Failure(_));
        // The version before the windows are read: see `quiet`.
        let version = self.quiet.load(Ordering::Acquire);
        let live = self.live.load();
        match from_code(word) {
            State::Closed => {
                let consecutive = if failure {
                    // Saturating: with no streak rule (or one never met) failures may come in a
                    // row for longer than a `u32` counts.
                    self.consecutive
                        .fetch_update(Ordering::AcqRel, Ordering::Acquire, |c| c.checked_add(1))
                        .map_or(u32::MAX, |c| c + 1)
                } else {
                    if self.consecutive.load(Ordering::Relaxed) != 0 {
                        self.consecutive.store(0, Ordering::Relaxed);
                    }
                    0
                };
                if let Some(w) = &live.throttle {
                    w.record(failure, false);
                    if !failure {
                        if !self.answered.load(Ordering::Relaxed) {
                            self.answered.store(true, Ordering::Relaxed);
                        }
                        if self.silent_since.load(Ordering::Relaxed) != 0 {
                            self.silent_since.store(0, Ordering::Relaxed);
                        }
                    }
                }
                let counts = record_rates(&live, failure, slow, now);
                self.settle(version, &live, true);
                // A recent window's last span, judged only when an outcome could trip it.
                let recent = match &live.rates {
                    Rates::Recent(w, within, min_calls) if failure || slow => {
                        w.recent(now(), *within, *min_calls)
                    }
                    _ => None,
                };
                if should_trip(&live.cfg, consecutive, counts, recent) {
                    let hint = match outcome {
                        Outcome::Failure(hint) => hint,
                        _ => None,
                    };
                    self.trip(word, hint, now(), false);
                }
            }
            State::HalfOpen => {
                // A probe is judged by the rules that tripped the breaker: under a slow-call
                // rate, a slow probe is the dependency still too slow, a failed probe.
                let failed = match outcome {
                    Outcome::Failure(hint) => Some(hint),
                    _ if slow && live.cfg.slow_call_rate.is_some() => Some(None),
                    _ => None,
                };
                if let Some(hint) = failed {
                    self.trip(word, hint, now(), true);
                } else {
                    let tag = ticket.generation() & TAG_MASK;
                    let threshold = u64::from(live.cfg.success_threshold);
                    let counted = |p: u64| probe_succeeded(p, tag, threshold);
                    let before = self
                        .probe_successes
                        .fetch_update(Ordering::AcqRel, Ordering::Acquire, |p| Some(counted(p)))
                        .unwrap_or(0);
                    // Of the probes that reach the threshold, the first closes it (see
                    // `close_from`); the others are successes of a generation that is over.
                    let claimed = |p: u64| p >> 32 == tag && p & CLOSING != 0;
                    if claimed(counted(before)) && !claimed(before) {
                        self.close_from(word, now());
                    }
                }
            }
            State::Bypassed => {
                record_rates(&live, failure, slow, now);
                self.settle(version, &live, true);
            }
            State::Open | State::Isolated => {}
        }
    }

    /// Sets the quiet flags that `live`'s windows allow now, or, when this thread changed the
    /// windows (`changed`), clears those they do not; `version` is [`Core::quiet`] as read
    /// before `live` was loaded and its windows looked at.
    fn settle(&self, version: u64, live: &Live, changed: bool) {
        let quiet = live.quiet();
        let had = version & (QUIET_RECORD | QUIET_ADMIT);
        // A time window is never quiet, and no flag can claim it is (a claim is made from the
        // windows loaded after the version it compares against): nothing to clear for it.
        let never = match live.rates {
            Rates::Time(_) => QUIET_RECORD,
            Rates::None | Rates::Count(_) | Rates::Recent(..) => 0,
        };
        let missing = (QUIET_RECORD | QUIET_ADMIT) & !quiet & !never;
        if changed && missing != 0 {
            // This thread's change may have ended the quiet: say so whatever the flags read
            // now, with a new version. A flag set meanwhile from an older look at the windows
            // (which may have missed this change: the windows' counters are relaxed) is
            // cleared, and one about to be set from such a look fails its compare-exchange.
            self.unquiet(missing);
        } else if quiet & !had != 0 {
            // Quieter: only if nothing changed since `version` was read.
            let _ = self.quiet.compare_exchange(
                version,
                version | quiet,
                Ordering::AcqRel,
                Ordering::Relaxed,
            );
        }
    }

    /// Clears `flags` (all of them after a window is reset or replaced) with a new version.
    fn unquiet(&self, flags: u64) {
        let _ = self
            .quiet
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |q| {
                Some(((q & !(VERSION - 1)) + VERSION) | (q & (VERSION - 1) & !flags))
            });
    }

    /// The open period after `reopens` consecutive re-openings: base × backoff^reopens,
    /// jittered, capped, and never shorter than the server's hint (itself cut to
    /// `max_hint`). Any duration is fine, up to `Duration::MAX`.
    fn open_period(&self, reopens: u32, hint: Option<Duration>) -> Duration {
        let live = self.live.load();
        let cfg = &live.cfg;
        let reopens = reopens.min(64);
        let base = cfg.open_duration.as_secs_f64() * cfg.open_backoff.powi(reopens as i32);
        let base = base.min(cfg.max_open_duration.as_secs_f64());
        let r = self.next_random();
        let max = cfg.max_open_duration;
        let jittered = if base * (1.0 + cfg.jitter_ratio) > max.as_secs_f64() {
            // The spread reaches past the cap. Capped as drawn, every draw above the cap (half
            // of them at the cap) would be the cap itself, and breakers opened together would
            // probe in the same millisecond. Drawn evenly from the upper half of what is left
            // below the cap instead: spread, with the mean the capped draws had at a base at
            // the cap (`(low + 3 × max) / 4` either way), a little above it for a base below.
            let low = (base * (1.0 - cfg.jitter_ratio) + max.as_secs_f64()) / 2.0;
            low + (max.as_secs_f64() - low) * r
        } else {
            base * (1.0 + cfg.jitter_ratio * (2.0 * r - 1.0))
        };
        // `max` in seconds as an `f64` may round up past what a `Duration` holds.
        let period = Duration::try_from_secs_f64(jittered.clamp(0.0, max.as_secs_f64()))
            .map_or(max, |period| period.min(max));
        // At least 1 ms (never above `max`, validated at least that): the breaker keeps time
        // in whole milliseconds, so a shorter period, as jitter can make of a 1 ms
        // `open_duration`, would round to none.
        period
            .max(MIN_OPEN)
            .max(hint.unwrap_or(Duration::ZERO).min(cfg.max_hint))
    }

    /// `until` (ms since origin) as a value of `open_until`, tagged with this trip's number,
    /// so that a trip that lost the race to open can tell its own value from the winner's
    /// when both computed the same end; [`FOREVER`] from 2^48 ms on.
    fn tag_until(&self, until: u64) -> u64 {
        if until >= 1 << (64 - UNTIL_TAG_BITS) {
            return FOREVER;
        }
        let tag = self.trips.fetch_add(1, Ordering::Relaxed) & ((1 << UNTIL_TAG_BITS) - 1);
        // Never `FOREVER` itself: the end is below 2^48.
        (until << UNTIL_TAG_BITS) | tag
    }

    /// A trip that lost the race to open undoes its write of `open_until`, `until`, if it is
    /// still there: back to `previous`, the value it replaced. Not when its end was
    /// [`FOREVER`], which carries no tag to tell it from a winner's: an open period of
    /// thousands of years is left as it is.
    fn undo_until(&self, until: u64, previous: u64) {
        if until != FOREVER {
            let _ = self.open_until.compare_exchange(
                until,
                previous,
                Ordering::AcqRel,
                Ordering::Acquire,
            );
        }
    }

    /// splitmix64 over an atomic: reproducible from the seed, lock-free, only on transitions.
    fn next_random(&self) -> f64 {
        let mut z = self
            .rng
            .fetch_add(0x9e37_79b9_7f4a_7c15, Ordering::Relaxed)
            .wrapping_add(0x9e37_79b9_7f4a_7c15);
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^= z >> 31;
        (z >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Opens the breaker from exactly `from_word`; `reopening` when a probe failed (the open
    /// period then grows). Returns whether it did: of racing callers, one opens it, and only
    /// that one counts a re-opening.
    fn trip(&self, from_word: u64, hint: Option<Duration>, now: u64, reopening: bool) -> bool {
        // Opening from closed starts an outage with no re-opening behind it: none, whatever the
        // count reads (a close publishes Closed before it zeroes the count, see `close_from`).
        let reopens = if reopening {
            self.reopens.load(Ordering::Acquire).saturating_add(1)
        } else {
            0
        };
        let period = self.open_period(reopens, hint);
        let until = self.tag_until(now.saturating_add(millis(period)));
        // Publish the end of the period (and, opening from closed, the start of the outage)
        // before the state, so whoever sees Open sees them.
        let previous = self.open_until.swap(until, Ordering::AcqRel);
        if !reopening {
            self.opened.store(now, Ordering::Release);
        }
        if !self.swap_state(from_word, State::Open, now) {
            // Someone else moved the breaker first: our end of the period is undone if it is
            // still ours. Ours by its tag: a trip that won with the same end, written after
            // ours, must not be undone (it would read half-open at once, its period and any
            // server hint skipped). The start of the outage is left: whoever won wrote one
            // as well, at the same moment, or moved the breaker out of the open states,
            // where no one reads it.
            self.undo_until(until, previous);
            return false;
        }
        if reopening {
            // Saturating: a count that wrapped round would cut the back-off to nothing.
            let _ = self
                .reopens
                .fetch_update(Ordering::AcqRel, Ordering::Acquire, |r| r.checked_add(1));
        }
        // Logged before the listeners hear it, so that what they do about it (a parent's
        // children tripped, a close by hand) is logged after it.
        if reopening {
            // The outage goes on: one line per failed probe would be a line every open
            // period for as long as it lasts. The close says how many there were.
            tracing::debug!(
                target: "palisade_breaker",
                breaker = %self.name,
                open_ms = millis(period),
                hint_ms = hint.map(millis),
                reopens,
                "circuit re-opened: a probe failed"
            );
        } else {
            tracing::warn!(
                target: "palisade_breaker",
                breaker = %self.name,
                open_ms = millis(period),
                hint_ms = hint.map(millis),
                reopens,
                "circuit opened"
            );
        }
        self.announce(from_code(from_word), State::Open);
        true
    }

    /// Closes the breaker from exactly `from_word` (half-open), its probes having answered;
    /// called by the one probe that claimed the close (see [`CLOSING`]).
    ///
    /// What the close forgets (the failure streak, the rate windows and the throttle's, the
    /// throttle's silence timer) is cleared before Closed is published: a call admitted the
    /// moment it is (by another thread, or by a listener hearing the close) then counts from
    /// nothing, not on top of the failures that tripped it, which would re-open it at once
    /// (and have the close wipe the counts of that new opening). If the compare-exchange loses
    /// (a probe failed or timed out, an operator moved it), clearing them took nothing that
    /// counts: while half-open nothing writes them (an outcome admitted in an earlier
    /// generation is dropped, and probes write neither streak nor window), an open or isolated
    /// breaker does not read them, a close clears them anyway, and a bypassed one only reports
    /// its window.
    ///
    /// The re-open count and `answered` wait for the compare-exchange: a probe failing
    /// meanwhile re-opens it with the back-off it has earned, and only a close says that the
    /// dependency answered. A trip from closed reads no re-open count (see `trip`).
    fn close_from(&self, from_word: u64, now: u64) {
        self.consecutive.store(0, Ordering::Release);
        self.reset_rates();
        // After the windows are emptied (as in `clear_by_hand`).
        self.silent_since.store(0, Ordering::Relaxed);
        if !self.swap_state(from_word, State::Closed, now) {
            return;
        }
        let failed_probes = self.reopens.swap(0, Ordering::AcqRel);
        self.answered.store(true, Ordering::Relaxed);
        // Logged before the listeners hear it, so that an opening they cause is logged after.
        tracing::info!(
            target: "palisade_breaker",
            breaker = %self.name,
            open_ms = now.saturating_sub(self.opened.load(Ordering::Acquire)),
            failed_probes,
            "circuit closed"
        );
        self.announce(from_code(from_word), State::Closed);
    }

    /// Clears the rate windows and the throttle's: a breaker that closes starts afresh, its
    /// probes having just shown the dependency answers.
    fn reset_rates(&self) {
        let live = self.live.load();
        match &live.rates {
            Rates::None => {}
            Rates::Count(w) => w.reset(),
            Rates::Time(w) => w.reset(),
            Rates::Recent(w, ..) => w.reset(),
        }
        if let Some(w) = &live.throttle {
            w.reset();
        }
        self.unquiet(QUIET_RECORD | QUIET_ADMIT);
        let version = self.quiet.load(Ordering::Acquire);
        self.settle(version, &live, false);
    }

    /// Moves from exactly `from_word` to `to` (next generation) and says so. Returns whether
    /// it did.
    fn transition(&self, from_word: u64, to: State, now: u64) -> bool {
        if !self.swap_state(from_word, to, now) {
            return false;
        }
        self.announce(from_code(from_word), to);
        true
    }

    /// Moves from exactly `from_word` to `to` (next generation), silently.
    fn swap_state(&self, from_word: u64, to: State, now: u64) -> bool {
        let next = pack((from_word >> 3) + 1, to);
        if self
            .word
            .compare_exchange(from_word, next, Ordering::AcqRel, Ordering::Acquire)
            .is_err()
        {
            return false;
        }
        self.entered.store(now, Ordering::Release);
        true
    }

    /// Tells tracing (at `DEBUG`: the transitions that matter to an operator have their own
    /// lines, see the crate docs' *Logging*), the metrics and the listeners about a transition.
    fn announce(&self, from: State, to: State) {
        tracing::debug!(target: "palisade_breaker", breaker = %self.name, %from, %to, "circuit state changed");
        palisade_core::metrics::breaker_transition(
            &self.name,
            from.as_str(),
            to.as_str(),
            to as u8,
        );
        self.emit(Event::Transition { from, to });
    }

    /// Forces a state by hand (isolate, close, bypass). Returns the state it left.
    pub(crate) fn force(&self, to: State, now: u64) -> State {
        self.force_as(to, now, false)
    }

    /// [`force`](Self::force); a close that is a `reset` also makes it a new breaker (see
    /// [`clear_by_hand`](Self::clear_by_hand)).
    fn force_as(&self, to: State, now: u64, reset: bool) -> State {
        loop {
            let word = self.word.load(Ordering::Acquire);
            let from = from_code(word);
            if to == State::Closed {
                // Before Closed is published, as a close by probes does (see `close_from`),
                // so that a failure the moment it is counts from nothing; and on a breaker
                // closed already, which a close by hand still clears, as `close` says. Again
                // on each try: a try that loses to another move is followed by one that wins.
                self.clear_by_hand(reset);
            }
            if from == to {
                // Already there: no transition to announce.
                return to;
            }
            if self.swap_state(word, to, now) {
                // Logged before the listeners hear it, so that what they do is logged after.
                tracing::info!(
                    target: "palisade_breaker",
                    breaker = %self.name,
                    %from,
                    %to,
                    "circuit state set by hand"
                );
                self.announce(from, to);
                return from;
            }
        }
    }

    /// What a close by hand clears, whether or not it moved the breaker: the failure streak,
    /// the back-off, the rate windows and the throttle's, and the throttle's silence timer,
    /// which would otherwise date from before the throttle's window was emptied and open the
    /// breaker at once on the first failures after the close (its window has then held no
    /// accepted request for no time at all). `answered` is kept: a close by hand is no answer
    /// from the dependency (no probe answered, so it is not set), but what the breaker learnt
    /// since it was made still holds (only `reset` makes it a new breaker), and the throttle
    /// acts again, as after any close, once its window holds a fifth of its size.
    ///
    /// A `reset` also forgets that the dependency answered and zeroes the metrics' counters:
    /// a new breaker.
    fn clear_by_hand(&self, reset: bool) {
        self.reopens.store(0, Ordering::Release);
        self.consecutive.store(0, Ordering::Release);
        self.reset_rates();
        // After the windows are emptied: a timer started from the old window is gone.
        self.silent_since.store(0, Ordering::Relaxed);
        if reset {
            // A new breaker's throttle refuses nothing before the dependency has answered once.
            self.answered.store(false, Ordering::Relaxed);
            for s in &self.successes {
                s.store(0, Ordering::Relaxed);
            }
            self.failures.store(0, Ordering::Relaxed);
            self.rejections.store(0, Ordering::Relaxed);
        }
    }

    /// Opens the breaker by hand for one open period (as if it had tripped), from closed or
    /// half-open, or from open once its open period is over (it reads half-open then, its
    /// next call a probe). Left as they are: a breaker open for the rest of its period, and
    /// one an operator isolated or bypassed, whose setting holds until closed or reset by
    /// hand.
    pub(crate) fn trip_now(&self, now: u64) {
        loop {
            let word = self.word.load(Ordering::Acquire);
            let from = from_code(word);
            // As `observed` reads it: open while its period lasts, half-open after.
            let over = match from {
                State::Isolated | State::Bypassed => return,
                State::Open if until_of(self.open_until.load(Ordering::Acquire)) > now => return,
                State::Open => true,
                State::Closed | State::HalfOpen => false,
            };
            // From closed, an outage with no re-opening behind it (see `trip`).
            let reopens = match from {
                State::Closed => 0,
                _ => self.reopens.load(Ordering::Acquire),
            };
            let period = self.open_period(reopens, None);
            let until = self.tag_until(now.saturating_add(millis(period)));
            let previous = self.open_until.swap(until, Ordering::AcqRel);
            if from == State::Closed {
                // A new outage starts (published before the state, as in `trip`).
                self.opened.store(now, Ordering::Release);
            }
            // The next generation even from open: a call that found the period over and is
            // about to start probing from this word fails its compare-exchange.
            if !self.swap_state(word, State::Open, now) {
                // As in `trip`: a trip that won keeps its end of the period (its hint).
                self.undo_until(until, previous);
                continue;
            }
            if from == State::Closed {
                tracing::info!(target: "palisade_breaker", breaker = %self.name, open_ms = millis(period), "circuit tripped by hand");
            } else {
                // Still the same outage (a parent re-opened, tripping its children again): as
                // quiet as a failed probe.
                tracing::debug!(target: "palisade_breaker", breaker = %self.name, open_ms = millis(period), "circuit tripped again by hand");
            }
            // Open to open is no transition a listener or the metrics have to hear: they never
            // heard it leave open (its probing starts with a call, and none came).
            if !over {
                self.announce(from, State::Open);
            }
            return;
        }
    }

    /// Back to a new breaker's state: closed, all counts cleared, before it says it is closed
    /// (see [`force_as`](Self::force_as)).
    pub(crate) fn reset(&self, now: u64) {
        self.force_as(State::Closed, now, true);
    }

    fn emit(&self, event: Event) {
        for listener in &self.listeners {
            if catch_unwind(AssertUnwindSafe(|| listener.on_event(&self.name, event))).is_err() {
                tracing::error!(target: "palisade_breaker", breaker = %self.name, ?event, "a breaker listener panicked");
            }
        }
    }

    /// Numbers for a metrics snapshot.
    pub(crate) fn numbers(&self, now: u64) -> Numbers {
        let live = self.live.load();
        let counts = match &live.rates {
            Rates::None => None,
            Rates::Count(w) => Some(w.counts()),
            Rates::Time(w) => Some(w.counts(now)),
            Rates::Recent(w, ..) => Some(w.counts()),
        };
        let (state, open_for_ms) = self.observed(|| now);
        Numbers {
            state,
            successes: self
                .successes
                .iter()
                .map(|s| s.load(Ordering::Relaxed))
                .sum(),
            failures: self.failures.load(Ordering::Relaxed),
            rejections: self.rejections.load(Ordering::Relaxed),
            consecutive_failures: self.consecutive.load(Ordering::Relaxed),
            window: counts,
            in_state_ms: now.saturating_sub(self.entered.load(Ordering::Acquire)),
            open_for_ms,
            reopens: self.reopens.load(Ordering::Relaxed),
        }
    }
}

impl Core {
    /// Swaps the configuration, keeping what still applies (see
    /// [`BreakerHandle::reconfigure`](crate::BreakerHandle::reconfigure)). `cfg` is valid.
    pub(crate) fn reconfigure(&self, cfg: BreakerConfig, now: u64) -> Reconfigured {
        let _one_at_a_time = self.reconfiguring.lock().unwrap_or_else(|e| e.into_inner());
        let old = self.live.load_full();
        let mut resets = Vec::new();
        let needs_rates = cfg.failure_rate.is_some() || cfg.slow_call_rate.is_some();
        let rates = match &old.rates {
            Rates::Count(_) | Rates::Time(_) | Rates::Recent(..)
                if needs_rates && cfg.window == old.cfg.window =>
            {
                old.rates.clone()
            }
            // The same ring of `calls` outcomes: kept, judged from now on with the new span
            // and minimum, which are the configuration's, not the ring's.
            Rates::Recent(w, ..) if needs_rates => match (old.cfg.window, cfg.window) {
                (
                    Window::Recent { calls: was, .. },
                    Window::Recent {
                        calls,
                        within,
                        min_calls,
                    },
                ) if was == calls => Rates::Recent(w.clone(), millis(within), min_calls),
                _ => new_rates(&old, &cfg, now, &mut resets),
            },
            _ => new_rates(&old, &cfg, now, &mut resets),
        };
        let mut throttle_kept = true;
        let throttle = match (&old.throttle, cfg.throttle) {
            (Some(w), Some(t)) if old.cfg.throttle.map(|o| o.window) == Some(t.window) => {
                Some(w.clone())
            }
            (previous, now) => {
                throttle_kept = false;
                if let Some(w) = previous {
                    resets.push(Reset::Throttle {
                        from: old.cfg.throttle.map(|t| t.window),
                        to: now.map(|t| t.window),
                        dropped: w.counts().calls,
                    });
                }
                now.map(|t| Arc::new(CountWindow::new(t.window as usize)))
            }
        };
        let word = self.word.load(Ordering::Acquire);
        let state = from_code(word);
        if state == State::HalfOpen {
            let p = self.probes.load(Ordering::Acquire);
            let in_flight = if p >> 32 == (word >> 3) & TAG_MASK {
                (p & TAG_MASK) as u32
            } else {
                0
            };
            if in_flight > cfg.half_open_probes {
                resets.push(Reset::ProbesOverLimit {
                    in_flight,
                    limit: cfg.half_open_probes,
                });
            }
        }
        if cfg.seed != old.cfg.seed {
            self.rng.store(cfg.seed ^ self.salt, Ordering::Relaxed);
        }
        let live = Arc::new(Live {
            cfg,
            rates,
            throttle,
        });
        self.live.store(live.clone());
        if !throttle_kept {
            // The silence timer measured the window just replaced: a new, empty one has held
            // no request at all, let alone for `max_open_duration` (see `throttled`).
            self.silent_since.store(0, Ordering::Relaxed);
        }
        self.timed.store(timed(&cfg), Ordering::Relaxed);
        self.slow_ns.store(slow_ns(&cfg), Ordering::Relaxed);
        // The windows may have changed: no quiet claim made from the old ones stands.
        self.unquiet(QUIET_RECORD | QUIET_ADMIT);
        let version = self.quiet.load(Ordering::Acquire);
        self.settle(version, &live, false);
        // Reported as a reader sees it: an open period that is over reads HalfOpen.
        let done = Reconfigured {
            state: self.observed(|| now).0,
            resets,
        };
        tracing::info!(
            target: "palisade_breaker",
            breaker = %self.name,
            state = %done.state,
            reset = %done,
            "breaker reconfigured"
        );
        done
    }
}

/// A new, empty rate window for `cfg` in place of `old`'s, whose outcomes are dropped (a
/// [`Reset::Window`] when it had a window).
fn new_rates(old: &Live, cfg: &BreakerConfig, now: u64, resets: &mut Vec<Reset>) -> Rates {
    let needs_rates = cfg.failure_rate.is_some() || cfg.slow_call_rate.is_some();
    let calls = match &old.rates {
        Rates::None => None,
        Rates::Count(w) => Some(w.counts().calls),
        Rates::Time(w) => Some(w.counts(now).calls),
        Rates::Recent(w, ..) => Some(w.counts().calls),
    };
    if let Some(dropped) = calls {
        resets.push(Reset::Window {
            from: Some(old.cfg.window),
            to: needs_rates.then_some(cfg.window),
            dropped,
        });
    }
    Rates::new(cfg)
}

/// Whether a call under `cfg` reads the clock when it starts.
fn timed(cfg: &BreakerConfig) -> bool {
    cfg.slow_call_duration.is_some() || matches!(cfg.cancel, crate::CancelPolicy::FailureAfter(_))
}

/// `cfg`'s slow-call threshold for [`Core::slow_ns`].
fn slow_ns(cfg: &BreakerConfig) -> u64 {
    cfg.slow_call_duration.map_or(NO_LIMIT, |d| {
        u64::try_from(d.as_nanos()).unwrap_or(NO_LIMIT - 1)
    })
}

fn record_rates(live: &Live, failure: bool, slow: bool, now: &dyn Fn() -> u64) -> Counts {
    match &live.rates {
        Rates::None => Counts::default(),
        Rates::Count(w) => w.record(failure, slow),
        Rates::Time(w) => w.record(failure, slow, now()),
        Rates::Recent(w, ..) => w.record(failure, slow, now()),
    }
}

/// Whether `cfg`'s rules trip on a streak of `consecutive` failures, on the window's `counts`
/// (a rate needs its `min_calls` of them), or on a recent window's last span (`recent`, which
/// [`RecentWindow::recent`] gives only with its own minimum met).
fn should_trip(
    cfg: &BreakerConfig,
    consecutive: u32,
    counts: Counts,
    recent: Option<Counts>,
) -> bool {
    if cfg.consecutive_failures.is_some_and(|n| consecutive >= n) {
        return true;
    }
    // Divided, not multiplied: `n / calls` rounds to the same `f64` as a ratio written as
    // that fraction (7 / 100 and 0.07), where `0.07 × 100` rounds up past 7.
    let at =
        |r: crate::config::Rate, n: u32, calls: u32| f64::from(n) / f64::from(calls) >= r.ratio;
    let over = |rate: Option<crate::config::Rate>, pick: fn(Counts) -> u32| {
        rate.is_some_and(|r| {
            (counts.calls >= r.min_calls && at(r, pick(counts), counts.calls))
                || recent.is_some_and(|c| at(r, pick(c), c.calls))
        })
    };
    over(cfg.failure_rate, |c| c.failures) || over(cfg.slow_call_rate, |c| c.slow)
}

pub(crate) struct Numbers {
    /// As a reader sees it ([`Core::observed`]).
    pub(crate) state: State,
    pub(crate) successes: u64,
    pub(crate) failures: u64,
    pub(crate) rejections: u64,
    pub(crate) consecutive_failures: u32,
    pub(crate) window: Option<Counts>,
    /// Since the last transition (for an Open word read as HalfOpen, since it opened).
    pub(crate) in_state_ms: u64,
    /// The time left in the open period, exactly while `state` is Open.
    pub(crate) open_for_ms: Option<u64>,
    pub(crate) reopens: u32,
}

#[cfg(test)]
#[cfg(not(palisade_loom))]
mod tests;

#[cfg(test)]
#[cfg(palisade_loom)]
mod loom_tests;
