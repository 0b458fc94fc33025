//! [`BreakerHandle`]: manual control and metrics.

use std::sync::Arc;
use std::time::Duration;

use palisade_core::stripe::Striped;
use palisade_core::{Class, ConfigError};
use tokio::time::Instant;

use crate::error::CircuitOpen;
use crate::future::Guard;
use crate::state::{self, Core, Outcome};
use crate::{BreakerConfig, Reconfigured, State};

/// One stripe's view of a breaker: the state every stripe shares, and which of the breaker's
/// per-stripe success counters this stripe's calls count on. Held in a
/// [`Stripe`](palisade_core::stripe::Stripe) of the breaker's [`Stripes`], so each stripe's
/// reference count is on its own cache lines.
#[derive(Debug)]
pub(crate) struct Lane {
    pub(crate) shared: Arc<Shared>,
    /// The index of this stripe's success counter (the breaker reduces it modulo its number of
    /// counters).
    pub(crate) index: usize,
}

/// The stripes of one breaker, owned by its layer, services and handles (not by `Shared`, which the
/// stripes point to).
///
/// Each service instance takes a stripe when it is made or cloned
/// ([`pick`](Striped::pick), round robin), and its calls count there: instances on different
/// threads (a clone per connection or per worker, as tower services are used) write different
/// cache lines, and the hot path reads no thread-local.
pub(crate) type Stripes = Striped<Lane>;

/// The stripes of a new breaker with `shared` state.
pub(crate) fn stripes(shared: Arc<Shared>) -> Arc<Stripes> {
    Arc::new(Striped::from_fn(|index| Lane {
        shared: shared.clone(),
        index,
    }))
}

/// What a breaker's layer, services, futures and handles share.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) core: Core,
    pub(crate) origin: Instant,
}

impl Shared {
    pub(crate) fn now_ms(&self) -> u64 {
        Instant::now()
            .saturating_duration_since(self.origin)
            .as_millis() as u64
    }

    /// Nanoseconds since the origin (saturating far below the guard's sentinels).
    pub(crate) fn now_ns(&self) -> u64 {
        let nanos = Instant::now()
            .saturating_duration_since(self.origin)
            .as_nanos();
        u64::try_from(nanos).unwrap_or(u64::MAX).min(u64::MAX / 2)
    }
}

/// Manual control and metrics of one breaker. Cheap to clone.
///
/// Operator actions take effect at once for every service sharing the breaker, including a
/// call already polled ready and not yet made (see the crate docs' *Readiness*):
/// [`isolate`](Self::isolate) forces it open (rejecting) until [`close`](Self::close) or
/// [`reset`](Self::reset); [`bypass`](Self::bypass) lets everything through while still
/// counting, until [`close`](Self::close) or [`reset`](Self::reset).
#[derive(Clone, Debug)]
pub struct BreakerHandle {
    pub(crate) stripes: Arc<Stripes>,
}

/// A breaker's numbers at one instant ([`BreakerHandle::metrics`]). `#[non_exhaustive]`: a
/// number may be added.
#[derive(Clone, Copy, Debug, PartialEq)]
#[non_exhaustive]
pub struct Metrics {
    /// The state, as the next call would meet it: see [`BreakerHandle::state`] (an open
    /// breaker whose open period is over reads [`State::HalfOpen`], before any call comes).
    pub state: State,
    /// Successful calls since start (or the last reset).
    pub successes: u64,
    /// Calls that failed in a way that counts against health.
    pub failures: u64,
    /// Calls rejected without calling the dependency.
    pub rejections: u64,
    /// Failures in a row while closed.
    pub consecutive_failures: u32,
    /// Outcomes in the rate window, when a rate rule is configured.
    pub window_calls: Option<u32>,
    /// The fraction of the window's outcomes that failed (0.0 to 1.0), when a rate rule is
    /// configured and the window holds an outcome.
    pub failure_ratio: Option<f64>,
    /// The fraction of the window's outcomes that were slow (0.0 to 1.0), when a rate rule is
    /// configured and the window holds an outcome.
    pub slow_call_ratio: Option<f64>,
    /// How long it has been in this state: since its last transition, or since it was made
    /// (for a key's breaker, the key's first use or its return after eviction). A breaker
    /// that reads [`State::HalfOpen`] because its open period ended with no call since has
    /// not made the transition yet (its next call makes it), so this counts from when it
    /// opened.
    pub time_in_state: Duration,
    /// While open: how long until it probes. `Some` exactly while [`state`](Self::state) is
    /// [`State::Open`], and then never zero: once the period is over the state reads
    /// [`State::HalfOpen`] and this is `None`.
    pub retry_after: Option<Duration>,
    /// Consecutive re-openings (failed probes) behind the current open period.
    pub reopens: u32,
}

impl BreakerHandle {
    fn shared(&self) -> &Shared {
        &self.stripes.get().shared
    }

    /// The breaker's name.
    pub fn name(&self) -> &str {
        &self.shared().core.name
    }

    /// The state now, as the next call would meet it.
    ///
    /// An open breaker moves to half-open when a call comes after its open period ended: that
    /// call is the first probe. Until it comes, the breaker reads [`State::HalfOpen`] here
    /// (and in [`metrics`](Self::metrics)) as soon as the period is over, as Polly's
    /// `CircuitState` does, not [`State::Open`]: a readiness check or a health report that
    /// reads the breaker sees that it admits a probe, and does not keep the traffic that would
    /// probe it away for good. Reading changes nothing: the transition (its metrics, its
    /// [`Event`](crate::Event), its log line) happens with that call, and
    /// [`Metrics::time_in_state`] counts from the opening until then.
    ///
    /// Reads the clock only while the breaker is open.
    ///
    /// ```
    /// use std::time::Duration;
    /// use palisade_breaker::{BreakerLayer, State};
    /// use palisade_core::{Category, Class};
    ///
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)]
    /// # async fn main() {
    /// let layer = BreakerLayer::builder("llm").consecutive_failures(1).build().unwrap();
    /// let handle = layer.handle();
    /// handle.try_acquire().unwrap().failure(Class::new(Category::Network));
    /// assert_eq!(handle.state(), State::Open);
    /// assert!(handle.metrics().retry_after.is_some());
    ///
    /// // The open period ends with no call: the next call would probe.
    /// tokio::time::sleep(Duration::from_secs(60)).await;
    /// assert_eq!(handle.state(), State::HalfOpen);
    /// assert_eq!(handle.metrics().retry_after, None);
    /// // And it does.
    /// handle.try_acquire().unwrap().success();
    /// # }
    /// ```
    pub fn state(&self) -> State {
        let shared = self.shared();
        shared.core.observed(|| shared.now_ms()).0
    }

    /// Forces the breaker open (rejecting every call) until closed or reset by hand.
    pub fn isolate(&self) {
        self.shared()
            .core
            .force(State::Isolated, self.shared().now_ms());
    }

    /// Closes the breaker at once, clearing its failure counts.
    pub fn close(&self) {
        self.shared()
            .core
            .force(State::Closed, self.shared().now_ms());
    }

    /// Opens the breaker now for one open period, as if it had tripped (it then probes as
    /// usual): from closed, from half-open, and from open once its open period is over (it
    /// reads [`State::HalfOpen`] then). Used to propagate an open parent to its children.
    ///
    /// It does not override an operator: a breaker [isolated](Self::isolate) or
    /// [bypassed](Self::bypass) stays so until [closed](Self::close) or [reset](Self::reset).
    /// Nor does it lengthen an open period still running.
    pub fn trip(&self) {
        self.shared().core.trip_now(self.shared().now_ms());
    }

    /// Takes the breaker out of the way: it lets every call through ([`State::Bypassed`])
    /// while still counting outcomes, until closed or reset by hand.
    pub fn bypass(&self) {
        self.shared()
            .core
            .force(State::Bypassed, self.shared().now_ms());
    }

    /// Back to a new breaker: closed, every count cleared.
    pub fn reset(&self) {
        self.shared().core.reset(self.shared().now_ms());
    }

    /// The configuration in force now.
    pub fn config(&self) -> BreakerConfig {
        self.shared().core.live().cfg
    }

    /// Swaps the breaker's configuration live, keeping everything the new one still applies
    /// to, for every service sharing the breaker, from their next call on.
    ///
    /// Kept: the state, the end of the current open period (a new
    /// [`open_duration`](BreakerConfig::open_duration) applies from the next opening), the
    /// re-open count behind the back-off, the failure streak (a lower
    /// [`consecutive_failures`](BreakerConfig::consecutive_failures) trips on the next
    /// failure, not on the change itself), the probes in flight and the successful probes so
    /// far, the metrics' counters and the listeners; the rate window and the throttle's window
    /// when the new configuration measures over the same one (same kind and size; a recent
    /// window's `within` and `min_calls` may change), with their outcomes. What cannot carry over is listed in the result's
    /// [`resets`](Reconfigured::resets) with the reason, and the whole change is one `tracing`
    /// event (target `palisade_breaker`, message `breaker reconfigured`, with the breaker's
    /// name, its state and the resets). A new [`seed`](BreakerConfig::seed) restarts the
    /// random draws from it; an unchanged one continues them.
    ///
    /// Calls already running finish under the rules in force when they end. The closed
    /// happy path does not read the configuration, so it costs nothing to make it
    /// reconfigurable; the reconfiguration itself takes a lock of its own, never taken by a
    /// call.
    ///
    /// ```
    /// use std::time::Duration;
    /// use palisade_breaker::{BreakerLayer, Reset, State, Window};
    /// use palisade_core::{Category, Class};
    ///
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)]
    /// # async fn main() {
    /// let layer = BreakerLayer::builder("llm").consecutive_failures(3).build().unwrap();
    /// let handle = layer.handle();
    /// for _ in 0..3 {
    ///     handle.try_acquire().unwrap().failure(Class::new(Category::Network));
    /// }
    /// assert_eq!(handle.state(), State::Open);
    ///
    /// // A longer open period for the next openings, and probes two at a time: the open
    /// // breaker stays open, with the period it had, and the window keeps its outcomes.
    /// let mut config = handle.config();
    /// config.open_duration = Duration::from_secs(2);
    /// config.max_open_duration = Duration::from_secs(10);
    /// config.half_open_probes = 2;
    /// let done = handle.reconfigure(config).unwrap();
    /// assert_eq!(done.state, State::Open);
    /// assert!(done.is_lossless());
    /// assert!(handle.metrics().retry_after.unwrap() <= Duration::from_millis(550));
    ///
    /// // Another window size cannot keep the outcomes: it says so.
    /// config.window = Window::Count(50);
    /// let done = handle.reconfigure(config).unwrap();
    /// assert_eq!(
    ///     done.resets,
    ///     [Reset::Window { from: Some(palisade_breaker::BreakerConfig::default().window), to: Some(Window::Count(50)), dropped: 3 }]
    /// );
    /// assert_eq!(handle.metrics().window_calls, Some(0));
    ///
    /// // An invalid configuration changes nothing and names the field.
    /// config.half_open_probes = 0;
    /// assert_eq!(handle.reconfigure(config).unwrap_err().field(), "half_open_probes");
    /// assert_eq!(handle.config().half_open_probes, 2);
    /// # }
    /// ```
    ///
    /// # Errors
    /// A [`ConfigError`] naming the first invalid field (see [`BreakerConfig::validate`]); the
    /// breaker is then left exactly as it was.
    pub fn reconfigure(&self, config: BreakerConfig) -> Result<Reconfigured, ConfigError> {
        config.validate()?;
        let shared = self.shared();
        Ok(shared.core.reconfigure(config, shared.now_ms()))
    }

    /// Asks the breaker to admit one call made by hand, outside its service: the permit, or the
    /// [`CircuitOpen`] error its service would have failed the call with (counted as a
    /// rejection either way).
    ///
    /// The call's outcome is whatever the [`Permit`] records: this is for calls whose end is not
    /// the end of a future, such as a streamed response whose body can still fail after its
    /// head arrived (palisade-http's `StreamBreaker` records the outcome when the body ends).
    /// A half-open breaker gives the permit one of its probe slots, as its service would.
    ///
    /// ```
    /// use palisade_breaker::{BreakerLayer, State};
    /// use palisade_core::{Category, Class};
    ///
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)]
    /// # async fn main() {
    /// let layer = BreakerLayer::builder("stream").consecutive_failures(2).build().unwrap();
    /// let handle = layer.handle();
    /// for _ in 0..2 {
    ///     let mut permit = handle.try_acquire().unwrap();
    ///     permit.start();
    ///     // ... the call runs; its body fails half-way ...
    ///     permit.failure(Class::new(Category::Network));
    /// }
    /// assert_eq!(handle.state(), State::Open);
    /// assert!(handle.try_acquire().is_err());
    /// # }
    /// ```
    pub fn try_acquire(&self) -> Result<Permit, CircuitOpen> {
        self.try_reserve().map_err(Refusal::reject)
    }

    /// Decides whether the breaker admits one call made by hand, as
    /// [`try_acquire`](Self::try_acquire) does, but leaves a refusal to be delivered later:
    /// a [`Refusal`] counts as a rejection only when [`Refusal::reject`] fails a call with it.
    ///
    /// This is for a service that decides in `poll_ready` and calls in `call`, as the
    /// breaker's own service does. The breaker may move in between (an operator isolates,
    /// trips, closes or resets it; another service's probe closes it; its open period ends),
    /// and the decision then no longer holds: at `call`, a permit that is no longer
    /// [current](Permit::is_current) and a refusal that no longer [stands](Refusal::stands)
    /// are dropped and the call decided again with another `try_reserve`.
    ///
    /// ```
    /// use palisade_breaker::{BreakerLayer, State};
    ///
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)]
    /// # async fn main() {
    /// let layer = BreakerLayer::new("stream");
    /// let handle = layer.handle();
    /// // Decided while isolated (in `poll_ready`, say)...
    /// handle.isolate();
    /// let mut refusal = handle.try_reserve().unwrap_err();
    /// assert!(refusal.stands());
    /// // ... and the operator closes the breaker before the call: decided again, admitted.
    /// handle.close();
    /// assert!(!refusal.stands());
    /// let permit = handle.try_reserve().unwrap();
    /// assert!(permit.is_current());
    /// // Nothing was rejected.
    /// assert_eq!(handle.metrics().rejections, 0);
    /// // An admission made while closed no longer holds once the breaker is isolated.
    /// handle.isolate();
    /// assert!(!permit.is_current());
    /// let open = handle.try_reserve().unwrap_err().reject();
    /// assert_eq!(open.state, State::Isolated);
    /// assert_eq!(handle.metrics().rejections, 1);
    /// # }
    /// ```
    pub fn try_reserve(&self) -> Result<Permit, Refusal> {
        let stripe = self.stripes.pick();
        let shared = &stripe.shared;
        match shared.core.decide(|| shared.now_ms()) {
            Ok(ticket) => Ok(Permit {
                guard: Guard::reserve(stripe.clone(), ticket),
            }),
            Err(refusal) => Err(Refusal {
                stripe: stripe.clone(),
                refusal,
            }),
        }
    }

    /// A snapshot of the numbers. Its [`state`](Metrics::state) reads as
    /// [`state`](Self::state) does: half-open once the open period is over, before any call.
    pub fn metrics(&self) -> Metrics {
        let n = self.shared().core.numbers(self.shared().now_ms());
        let rate = |part: u32| {
            n.window
                .filter(|w| w.calls > 0)
                .map(|w| f64::from(part) / f64::from(w.calls))
        };
        Metrics {
            state: n.state,
            successes: n.successes,
            failures: n.failures,
            rejections: n.rejections,
            consecutive_failures: n.consecutive_failures,
            window_calls: n.window.map(|w| w.calls),
            failure_ratio: n.window.and_then(|w| rate(w.failures)),
            slow_call_ratio: n.window.and_then(|w| rate(w.slow)),
            time_in_state: Duration::from_millis(n.in_state_ms),
            retry_after: n.open_for_ms.map(Duration::from_millis),
            reopens: n.reopens,
        }
    }
}

/// One admitted call made by hand ([`BreakerHandle::try_acquire`]): the breaker hears its
/// outcome exactly once.
///
/// [`start`](Self::start) it when the call begins (durations are measured from there, for
/// slow calls and probes), then record [`success`](Self::success) or
/// [`failure`](Self::failure). Dropped before it records anything (by its owner, or as a
/// panic unwinds past it), a permit that was never started gives its probe slot back and
/// counts nothing; a started one is a cancelled call, judged by the breaker's
/// [`CancelPolicy`](crate::CancelPolicy).
#[derive(Debug)]
pub struct Permit {
    guard: Guard,
}

impl Permit {
    /// Whether the breaker is still in the state that admitted this permit: `false` once it
    /// has moved since (isolated, tripped or bypassed by an operator, opened by failures,
    /// closed by a probe), whether or not the permit was started. One relaxed atomic load.
    ///
    /// A permit admitted before a call is made (in a service's `poll_ready`) and no longer
    /// current when the call comes is dropped unstarted and the call decided again with
    /// [`BreakerHandle::try_reserve`]: see there.
    #[inline]
    pub fn is_current(&self) -> bool {
        self.guard.current()
    }

    /// The call starts now.
    pub fn start(&mut self) {
        self.guard.start();
    }

    /// The call succeeded.
    pub fn success(mut self) {
        self.guard.finish(Outcome::Success);
    }

    /// The call failed with `class`: a failure if the class
    /// [counts against health](Class::counts_against_health) (its `retry_after` then bounds
    /// the open period from below, as for the breaker's own calls), otherwise neither a
    /// success nor a failure.
    pub fn failure(mut self, class: Class) {
        self.guard.finish(if class.counts_against_health() {
            Outcome::Failure(class.retry_after)
        } else {
            Outcome::Neutral
        });
    }
}

/// A refusal decided by [`BreakerHandle::try_reserve`] and not delivered yet: it counts as a
/// rejection (in the metrics, and as an [`Event::Rejected`](crate::Event::Rejected)) only
/// when [`reject`](Self::reject) fails a call with it. Dropped, it counts nothing.
#[derive(Debug)]
pub struct Refusal {
    stripe: Arc<palisade_core::stripe::Stripe<Lane>>,
    refusal: state::Refusal,
}

impl Refusal {
    /// Whether the refusal still stands: the breaker has not moved since it was decided (no
    /// transition, and an open period that is not over yet). If it stands, the time left
    /// before the breaker probes is brought up to date; if not, the call is to be decided
    /// again with [`BreakerHandle::try_reserve`]. Reads the clock only for a refusal made
    /// while open.
    pub fn stands(&mut self) -> bool {
        let shared = &self.stripe.shared;
        shared
            .core
            .still_refuses(&mut self.refusal, || shared.now_ms())
    }

    /// Fails a call with this refusal: counts it as a rejection now and returns the error,
    /// naming the breaker, the state that refused and the time left before it probes (as of
    /// the last [`stands`](Self::stands), or of the decision).
    pub fn reject(self) -> CircuitOpen {
        let refused = self.stripe.shared.core.reject(self.refusal.refused);
        CircuitOpen::new(
            refused.breaker,
            refused.state,
            refused.retry_after_ms.map(Duration::from_millis),
        )
    }
}

#[cfg(test)]
#[cfg(not(palisade_loom))]
mod tests {
    use std::time::Duration;

    use palisade_core::{Category, Class};

    use crate::tests::classic;
    use crate::{BreakerLayer, CancelPolicy, State};

    fn handle(f: impl FnOnce(&mut crate::BreakerConfig)) -> super::BreakerHandle {
        BreakerLayer::builder("p")
            .config(classic(f))
            .build()
            .unwrap()
            .handle()
    }

    #[tokio::test(start_paused = true)]
    async fn permits_count_like_calls() {
        let h = handle(|c| c.consecutive_failures = Some(3));
        for _ in 0..2 {
            let mut p = h.try_acquire().unwrap();
            p.start();
            p.failure(Class::new(Category::Network));
        }
        // A success clears the streak; a class that does not count against health is neither.
        h.try_acquire().unwrap().success();
        let m = h.metrics();
        assert_eq!((m.successes, m.failures, m.consecutive_failures), (1, 2, 0));
        h.try_acquire()
            .unwrap()
            .failure(Class::new(Category::Validation));
        assert_eq!(h.metrics().failures, 2);
        for _ in 0..3 {
            h.try_acquire()
                .unwrap()
                .failure(Class::new(Category::ServerError));
        }
        assert_eq!(h.state(), State::Open);
        let open = h.try_acquire().unwrap_err();
        assert_eq!(&*open.breaker, "p");
        assert_eq!(open.retry_after, Some(Duration::from_secs(30)));
        assert_eq!(h.metrics().rejections, 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_failure_hint_bounds_the_open_period() {
        let h = handle(|c| c.consecutive_failures = Some(1));
        let class = Class::new(Category::ServerError).with_retry_after(Duration::from_secs(50));
        h.try_acquire().unwrap().failure(class);
        assert_eq!(
            h.try_acquire().unwrap_err().retry_after,
            Some(Duration::from_secs(50))
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_half_open_permit_is_a_probe() {
        let h = handle(|c| {
            c.consecutive_failures = Some(1);
            c.half_open_probes = 1;
            c.success_threshold = 1;
        });
        h.try_acquire()
            .unwrap()
            .failure(Class::new(Category::Network));
        tokio::time::advance(Duration::from_secs(30)).await;
        // An unstarted permit dropped gives its slot back.
        drop(h.try_acquire().unwrap());
        assert_eq!(h.state(), State::HalfOpen);
        let mut probe = h.try_acquire().unwrap();
        probe.start();
        // The one slot is taken.
        assert_eq!(h.try_acquire().unwrap_err().state, State::HalfOpen);
        probe.success();
        assert_eq!(h.state(), State::Closed);
    }

    #[tokio::test(start_paused = true)]
    async fn a_reservation_is_decided_again_once_the_breaker_moved() {
        let h = handle(|c| {
            c.consecutive_failures = Some(1);
            c.half_open_probes = 1;
            c.success_threshold = 1;
        });
        // A permit is current until the breaker moves, started or not.
        let mut p = h.try_reserve().unwrap();
        assert!(p.is_current());
        p.start();
        assert!(p.is_current());
        h.bypass();
        assert!(!p.is_current());
        drop(p);
        h.close();
        // A refusal decided while open stands, with its time left brought up to date, until
        // the open period ends; it counts nothing until a call is failed with it.
        h.trip();
        let mut r = h.try_reserve().unwrap_err();
        tokio::time::advance(Duration::from_secs(10)).await;
        assert!(r.stands());
        assert_eq!(h.metrics().rejections, 0);
        let open = r.reject();
        assert_eq!(
            (open.state, open.retry_after),
            (State::Open, Some(Duration::from_secs(20)))
        );
        assert_eq!(h.metrics().rejections, 1);
        let mut r = h.try_reserve().unwrap_err();
        tokio::time::advance(Duration::from_secs(20)).await;
        // No call since the period ended: the breaker has not moved (the refusal was decided
        // on the state it is still in), but it reads HalfOpen, as its next call is the probe;
        // the refusal no longer stands.
        assert_eq!(h.state(), State::HalfOpen);
        assert_eq!(h.metrics().time_in_state, Duration::from_secs(30));
        assert!(!r.stands());
        drop(r);
        // A probe permit goes stale when the breaker moves; the refusal of the busy slot
        // stands until then.
        let probe = h.try_reserve().unwrap();
        assert_eq!(h.state(), State::HalfOpen);
        let mut busy = h.try_reserve().unwrap_err();
        assert!(busy.stands());
        assert!(probe.is_current());
        h.isolate();
        assert!(!probe.is_current());
        assert!(!busy.stands());
        // Isolated: a refusal stands until an operator closes the breaker.
        let mut r = h.try_reserve().unwrap_err();
        assert!(r.stands());
        h.close();
        assert!(!r.stands());
        drop((probe, busy, r));
        assert_eq!(h.metrics().rejections, 1);
        h.try_acquire().unwrap().success();
        assert_eq!(h.state(), State::Closed);
    }

    #[tokio::test(start_paused = true)]
    async fn a_started_permit_dropped_is_a_cancellation() {
        let h = handle(|c| {
            c.consecutive_failures = Some(1);
            c.cancel = CancelPolicy::Failure;
        });
        drop(h.try_acquire().unwrap());
        assert_eq!(h.state(), State::Closed);
        let mut p = h.try_acquire().unwrap();
        p.start();
        drop(p);
        assert_eq!(h.state(), State::Open);
    }
}
