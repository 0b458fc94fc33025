//! The retry decision for one failed attempt: a plain struct that takes `now`, draws from a
//! given rng and does no I/O.

use std::time::Duration;

use palisade_core::{Category, Class};
use rand::Rng;
use tokio::time::Instant;

use crate::backoff::{Backoff, Jitter};
use palisade_core::sync::atomic::{AtomicU64, Ordering};

/// The settings the decision reads.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct Policy {
    pub(crate) backoff: Backoff,
    pub(crate) jitter: Jitter,
    /// The initial delay used instead of the backoff's for `RateLimited` failures.
    pub(crate) rate_limited: Duration,
    /// Server hints above this are not waited for: no retry.
    pub(crate) max_retry_after: Duration,
    /// Whether a refusal with a time to come back waits for it without using an attempt,
    /// under a deadline ([`RetryBuilder::wait_for_breaker`](crate::RetryBuilder::wait_for_breaker)).
    pub(crate) wait_for_breaker: bool,
    /// Whether a retry the budget refuses waits for it, under a deadline
    /// ([`RetryBuilder::wait_for_budget`](crate::RetryBuilder::wait_for_budget)).
    pub(crate) wait_for_budget: bool,
    /// The least time before the deadline a retry must start with
    /// ([`RetryBuilder::min_attempt_time`](crate::RetryBuilder::min_attempt_time)).
    pub(crate) min_attempt_time: Duration,
}

/// How much a wait for a refusing breaker or for the budget is stretched, at most (a random
/// 0 to 50 %), so that the requests held do not all come back at once.
pub(crate) const SPREAD: f64 = 0.5;

/// How much a server's hint is stretched, at most (a random 0 to 10 %): never shorter than
/// the server asked, and not all at once. A limiter that gives every refused caller the same
/// hint otherwise gets all their retries back in the same instant, in step with the new calls
/// that arrive then, and refuses them again: in palisade's simulator (80 calls/s against a
/// 50 calls/s limit, 1 s hints), not one request retried on its exact hint succeeded.
pub(crate) const HINT_SPREAD: f64 = 0.1;

/// How often a retry waiting for the budget asks it again (before the stretch): often enough
/// that a retry the budget allows goes out within a fraction of a usual backoff, rarely
/// enough that a thousand waiting requests cost a few thousand timer wakes a second.
pub(crate) const BUDGET_RECHECK: Duration = Duration::from_millis(250);

/// How often, at most, one retry the budget holds goes out without its permission, as a probe
/// of the dependency (see [`ProbeGate`]).
pub(crate) const BUDGET_PROBE: Duration = Duration::from_millis(250);

/// How often, at most, the layer warns that the budget refused a retry: the first refusal of
/// an outage is news, the next hundred are not (each is still a `DEBUG` event and a metric).
pub(crate) const BUDGET_WARNING: Duration = Duration::from_secs(10);

/// Lets something happen at most once per `period`, across a layer's clones: one retry held
/// by the budget through as a probe per [`BUDGET_PROBE`], one budget warning per
/// [`BUDGET_WARNING`].
///
/// The probe: a budget that refills from traffic, gRPC's throttle above all (its tokens come
/// back only with successes), learns that the dependency is back only from attempts that
/// reach it. Its refusals never stop a caller's *next* request (first attempts are not
/// budgeted), so with callers that keep sending, those first attempts are the probes. A caller
/// that sends its next request only once this one is answered (an agent's loop, a worker
/// pool, a pipeline step) sends nothing while its request is held: nothing reaches the
/// dependency, the budget never refills, and every held request waits out its whole deadline
/// even when the dependency came back long before. The pacer lets one held retry through each
/// period, in place of the next request the held callers cannot send.
#[derive(Debug)]
pub(crate) struct Pacer {
    origin: Instant,
    period: Duration,
    /// When the next one may go: nanoseconds since `origin`.
    next: AtomicU64,
    /// How many were refused since the last one went.
    held: AtomicU64,
}

impl Pacer {
    pub(crate) fn new(origin: Instant, period: Duration) -> Self {
        Pacer {
            origin,
            period,
            next: AtomicU64::new(0),
            held: AtomicU64::new(0),
        }
    }

    /// Whether one may go at `now`; if so, the next may go a period later.
    pub(crate) fn try_claim(&self, now: Instant) -> bool {
        self.claim(now).is_some()
    }

    /// [`try_claim`](Self::try_claim), counting the refusals: `Some` of how many were refused
    /// since the last one went, or `None`.
    pub(crate) fn claim(&self, now: Instant) -> Option<u64> {
        let at = u64::try_from(now.saturating_duration_since(self.origin).as_nanos())
            .unwrap_or(u64::MAX);
        let next = self.next.load(Ordering::Relaxed);
        let period = u64::try_from(self.period.as_nanos()).unwrap_or(u64::MAX);
        if at >= next
            && self
                .next
                .compare_exchange(
                    next,
                    at.saturating_add(period),
                    Ordering::Relaxed,
                    Ordering::Relaxed,
                )
                .is_ok()
        {
            Some(self.held.swap(0, Ordering::Relaxed))
        } else {
            self.held.fetch_add(1, Ordering::Relaxed);
            None
        }
    }
}

/// What is known about a failed attempt.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Failure {
    pub(crate) class: Class,
    /// Attempts made so far, the failed one included (1 after the first attempt).
    pub(crate) attempts: u32,
    /// The attempt limit of this request.
    pub(crate) limit: u32,
    /// Whether credentials were already refreshed for this request.
    pub(crate) refreshed: bool,
    /// The previous backoff delay (zero before the first; a wait for a server's hint is not one).
    pub(crate) previous: Duration,
}

/// What to do about a failed attempt: retry (with the refresh hook `H`), or stop.
pub(crate) type Decision<H> = Result<Retry<H>, Stop>;

/// How to retry a failed attempt.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Retry<H> {
    /// Call this refresh hook, then retry once it is done and at least this long (a server's
    /// hint; zero without one) has passed since the failure.
    Refresh(H, Duration),
    /// Retry after this delay.
    After(Duration),
    /// The attempt was refused by a breaker below, which probes again after about this delay:
    /// wait, and send again without counting the refused attempt.
    WaitForBreaker(Duration),
}

/// Why a failed attempt is not retried.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Stop {
    /// The class says a retry cannot help.
    NotRetryable,
    /// The request used all its attempts.
    Attempts,
    /// The server asked for a wait longer than `max_retry_after`.
    RetryAfterTooLong,
    /// The retry could not start before the deadline.
    Deadline,
    /// An open breaker below refused the attempt, and the layer does not wait for it
    /// ([`RetryBuilder::wait_for_breaker`](crate::RetryBuilder::wait_for_breaker) `false`).
    BreakerOpen,
}

impl Stop {
    /// The reason, as the `reason` field of the "not retrying" event and the metric label.
    pub(crate) const fn as_str(self) -> &'static str {
        match self {
            Stop::NotRetryable => "not_retryable",
            Stop::Attempts => "attempts_spent",
            Stop::RetryAfterTooLong => "retry_after_too_long",
            Stop::Deadline => "deadline",
            Stop::BreakerOpen => "breaker_open",
        }
    }
}

/// Whether the server paced a failure: a rate limit that says when to come back.
pub(crate) fn paced(class: &Class) -> bool {
    class.category == Category::RateLimited && class.retry_after.is_some()
}

/// `base` stretched by a random 0 to [`SPREAD`], so that the requests held do not all come
/// back at once.
pub(crate) fn spread<R: Rng>(base: Duration, rng: &mut R) -> Duration {
    stretch(base, SPREAD, rng)
}

/// `base` stretched by a random 0 to `at_most` of itself: never shorter, and saturating at
/// `Duration::MAX` (a hint is the classifier's to set, however long: it must not panic here).
fn stretch<R: Rng>(base: Duration, at_most: f64, rng: &mut R) -> Duration {
    let factor = 1.0 + rng.random_range(0.0..=at_most);
    // `Duration::mul_f64`, without its panic on overflow; `max` because an f64 holds only 53
    // bits of a long duration's nanoseconds and may round it down.
    Duration::try_from_secs_f64(base.as_secs_f64() * factor)
        .unwrap_or(Duration::MAX)
        .max(base)
}

/// How far ahead a wait too long for an `Instant` to hold ends instead: 30 years, what
/// `tokio::time::sleep` does with such a duration.
const FAR_FUTURE: Duration = Duration::from_secs(86_400 * 365 * 30);

/// The instant a wait of `delay` from `now` ends; a wait that no `Instant` can hold (a hint or a
/// backoff of centuries) ends in 30 years, as `tokio::time::sleep` would, instead of panicking.
pub(crate) fn wake_at(now: Instant, delay: Duration) -> Instant {
    now.checked_add(delay)
        .or_else(|| now.checked_add(FAR_FUTURE))
        .unwrap_or(now)
}

/// Whether a failure counts toward the budget's throttling ([`Budget::on_failure`]): a
/// retryable failure does, except one the server paced (a rate limit with a hint: not evidence
/// that the dependency is failing) and a refusal by a protecting layer (an open breaker: it
/// never reached the dependency).
///
/// [`Budget::on_failure`]: crate::budget::Budget::on_failure
pub(crate) fn counts_toward_throttling(class: &Class) -> bool {
    class.retryable && !paced(class) && class.category != Category::Rejected
}

/// Whether retrying a failure spends budget. A call refused with a time to come back (an open
/// breaker's remaining period) does not: the refused attempt added no load, and the refusing
/// layer decides what reaches the dependency then. A refusal without one (a throttle shedding
/// load) is budgeted like any retry.
pub(crate) fn spends_budget(class: &Class) -> bool {
    !(class.category == Category::Rejected && class.retry_after.is_some())
}

/// The shortest wait for a refusing breaker: one whose next probe is due now refuses again
/// until the probe is sent, so waiting for nothing would only spin.
const MIN_BREAKER_WAIT: Duration = Duration::from_millis(1);

impl Policy {
    /// Whether a failure of `class` waits for the breaker that refused it, uncounted: a
    /// refusal that says when the breaker probes again (and so spends no budget), with the
    /// option on and a deadline to bound the wait.
    pub(crate) fn waits_for_breaker(&self, class: &Class, deadline: Option<Instant>) -> bool {
        self.wait_for_breaker && deadline.is_some() && !spends_budget(class)
    }

    /// The backoff for a failure of `category` (rate limiting starts from its own delay).
    pub(crate) fn backoff_for(&self, category: Category) -> Backoff {
        if category == Category::RateLimited {
            self.backoff.with_initial(self.rate_limited)
        } else {
            self.backoff
        }
    }

    /// Decides about `failure` at `now`, within `deadline`. An authentication failure is
    /// retried through the `refresh` hook when there is one. `rng` is called only when the
    /// jitter draws.
    pub(crate) fn decide<H, R: Rng>(
        &self,
        failure: &Failure,
        now: Instant,
        deadline: Option<Instant>,
        refresh: Option<H>,
        rng: impl FnOnce() -> R,
    ) -> Decision<H> {
        let class = &failure.class;
        let refresh = refresh.filter(|_| class.category == Category::Authentication);
        if refresh.is_some() {
            if failure.refreshed {
                return Err(Stop::NotRetryable);
            }
        } else if !class.retryable
            || matches!(class.category, Category::Cancelled | Category::Ignored)
        {
            return Err(Stop::NotRetryable);
        }
        if !self.wait_for_breaker && !spends_budget(class) {
            // An open breaker said when it probes again; retrying sooner meets the same
            // refusal, and waiting for it is what the option turned off: the caller (a
            // fallback above) has the refusal at once.
            return Err(Stop::BreakerOpen);
        }
        if self.waits_for_breaker(class, deadline) {
            // The refused attempt reached nothing: it does not count, and the deadline bounds
            // how long the request waits.
            let hint = class.retry_after.unwrap_or_default().max(MIN_BREAKER_WAIT);
            let delay = spread(hint, &mut rng());
            // Unlike a hint's stretch, this one is checked as drawn. The requests an open
            // breaker holds come back over half its open period, spread by the stretch; one
            // whose share lands past its deadline fails now instead of being drawn again
            // within its deadline, which would crowd the held requests into the moments just
            // before their deadlines, as the dependency starts to take calls again. Measured in
            // the simulator's brownout at 67 requests a second (seeds 2 and 6), redrawing them
            // answered 70.7 % and 70.2 % of requests against 71.9 % and 72.1 %, and served 94 %
            // and 91 % of what the returning capacity allowed against 101 %.
            if deadline.is_some_and(|d| {
                now.checked_add(delay)
                    .is_none_or(|at| too_late(at, d, self.min_attempt_time))
            }) {
                return Err(Stop::Deadline);
            }
            return Ok(Retry::WaitForBreaker(delay));
        }
        if failure.attempts >= failure.limit {
            return Err(Stop::Attempts);
        }
        if let Some(hook) = refresh {
            // A server's hint holds for a refreshed retry too (a 401 with a Retry-After): the
            // retry is sent once the refresh is done and the hint has passed, and a hint beyond
            // the most the policy waits returns the error, as for any other failure.
            let least = match class.retry_after {
                Some(hint) if hint > self.max_retry_after => {
                    return Err(Stop::RetryAfterTooLong);
                }
                Some(hint) => hint,
                None => Duration::ZERO,
            };
            if deadline.is_some_and(|d| {
                now.checked_add(least)
                    .is_none_or(|at| too_late(at, d, self.min_attempt_time))
            }) {
                return Err(Stop::Deadline);
            }
            return Ok(Retry::Refresh(hook, least));
        }

        // The least the retry waits, the wait drawn from it, and the rng it was drawn from.
        let (least, delay, rng) = match class.retry_after {
            // The server said when to come back: wait that long, neither the backoff nor the
            // rate-limited delay on top (gRPC A6: "the client will retry after the delay
            // specified by the server"; RFC 9110 §10.2.3, Retry-After: the least the client
            // is asked to wait), stretched by up to HINT_SPREAD so that the callers refused
            // together do not all come back together.
            Some(hint) if hint > self.max_retry_after => {
                return Err(Stop::RetryAfterTooLong);
            }
            Some(hint) => {
                let mut rng = rng();
                (hint, stretch(hint, HINT_SPREAD, &mut rng), Some(rng))
            }
            None => {
                let backoff = self.backoff_for(class.category);
                let base = backoff.delay(failure.attempts);
                let (lo, hi) = self.jitter.bounds(base, &backoff, failure.previous);
                if lo >= hi {
                    (lo, lo, None)
                } else {
                    let mut rng = rng();
                    let delay = self
                        .jitter
                        .apply(base, &backoff, failure.previous, &mut rng);
                    (lo, delay, Some(rng))
                }
            }
        };
        fit(now, deadline, self.min_attempt_time, least, delay, rng).map(Retry::After)
    }
}

/// Whether an attempt starting at `at` comes too late for `deadline`: at or after it, or with
/// less than `floor` (the least time an attempt is given) before it.
pub(crate) fn too_late(at: Instant, deadline: Instant, floor: Duration) -> bool {
    deadline.saturating_duration_since(at) < least_left(floor)
}

/// How late tokio's timer may fire: on the first whole millisecond at or after the time it was
/// asked for.
const TIMER_TICK: Duration = Duration::from_millis(1);

/// Whether an attempt whose wait has just ended, at `now`, comes too late for `deadline`: as
/// [`too_late`], allowing for the timer's rounding, since a wait fitted to end by the last
/// start (`floor` before the deadline, which need not fall on a whole millisecond) may fire up
/// to a tick after it. Never at or after the deadline.
pub(crate) fn too_late_on_waking(now: Instant, deadline: Instant, floor: Duration) -> bool {
    too_late(now, deadline, floor.saturating_sub(TIMER_TICK))
}

/// The least time before the deadline an attempt may start with: `floor`, and never none.
fn least_left(floor: Duration) -> Duration {
    floor.max(Duration::from_nanos(1))
}

/// Fits a retry's wait before the deadline, leaving the attempt at least `floor`. `least` is
/// the least the retry must wait (a server's hint, the backoff's lower bound), `drawn` the
/// wait drawn from it (with the stretch or the jitter), from `rng` (`None` when nothing was
/// drawn). (A wait for an open breaker is not fitted; see `Policy::decide`.) Below, "the
/// deadline" is the last moment the attempt may start: `floor` before the request's.
///
/// Only `least` decides whether the next attempt can start before the deadline: if it cannot,
/// the request stops. The random part spreads the requests over the time left, and is never a
/// reason to give one up: checked as drawn, with 1 s left, it gave up at once 48 in 100
/// requests a server had asked to come back in 950 ms. So a drawn wait that ends before the
/// deadline is kept as it is (with no deadline near, nothing changes), and one that does not is
/// drawn again, from `least` to just before the deadline: over both draws, the wait is uniform
/// over the part of its range that ends before the deadline.
fn fit<R: Rng>(
    now: Instant,
    deadline: Option<Instant>,
    floor: Duration,
    least: Duration,
    drawn: Duration,
    rng: Option<R>,
) -> Result<Duration, Stop> {
    let Some(deadline) = deadline else {
        return Ok(drawn);
    };
    // The longest wait that still leaves the attempt its time.
    let room = deadline
        .saturating_duration_since(now)
        .checked_sub(least_left(floor));
    let Some(room) = room.filter(|room| least <= *room) else {
        // A retry that would start too late cannot finish before the deadline.
        return Err(Stop::Deadline);
    };
    if drawn <= room {
        return Ok(drawn);
    }
    // Nothing drawn: the wait is `least`, which fits.
    Ok(rng.map_or(least, |mut rng| rng.random_range(least..=room)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand::rngs::SmallRng;

    const fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn policy() -> Policy {
        Policy {
            backoff: Backoff::exponential(ms(100), 2.0).with_cap(ms(1000)),
            jitter: Jitter::None,
            rate_limited: ms(700),
            max_retry_after: ms(5000),
            wait_for_breaker: true,
            wait_for_budget: true,
            min_attempt_time: Duration::ZERO,
        }
    }

    fn failure(category: Category, attempts: u32) -> Failure {
        Failure {
            class: Class::new(category),
            attempts,
            limit: 4,
            refreshed: false,
            previous: Duration::ZERO,
        }
    }

    const NO_HOOK: Option<()> = None;

    fn no_rng() -> SmallRng {
        panic!("no jitter, no draw")
    }

    /// The wait of a retry on a server's `hint`, checked to be the hint stretched by 0 to
    /// [`HINT_SPREAD`].
    fn on_hint(decision: Decision<()>, hint: Duration) -> Duration {
        let Ok(Retry::After(wait)) = decision else {
            panic!("expected a retry after {hint:?}, got {decision:?}");
        };
        assert!(
            wait >= hint && wait <= hint.mul_f64(1.0 + HINT_SPREAD),
            "{wait:?} is not {hint:?} stretched by 0 to 10 %"
        );
        wait
    }

    /// An open breaker's refusal, probing again in `retry_after`.
    fn refused(attempts: u32, retry_after: Duration) -> Failure {
        let mut f = failure(Category::Rejected, attempts);
        f.class = f.class.with_retry_after(retry_after);
        f
    }

    #[test]
    fn a_refusal_under_a_deadline_waits_for_the_breaker_uncounted() {
        let p = policy();
        let now = Instant::now();
        let deadline = Some(now + ms(10_000));
        let mut rng = SmallRng::seed_from_u64(7);
        let mut seen = Vec::new();
        // Even at the attempt limit (4 of 4): the refused attempt does not count.
        for attempts in [1, 4, 4, 4, 4, 4, 4, 4] {
            let decision = p.decide(&refused(attempts, ms(1000)), now, deadline, NO_HOOK, || {
                SmallRng::seed_from_u64(rng.random())
            });
            let Ok(Retry::WaitForBreaker(delay)) = decision else {
                panic!("expected a wait for the breaker, got {decision:?}");
            };
            // The breaker's time, stretched by 0 to 50 %.
            assert!(delay >= ms(1000) && delay <= ms(1500), "{delay:?}");
            seen.push(delay);
        }
        seen.dedup();
        assert!(seen.len() > 4, "the stretch is drawn each time: {seen:?}");
        // A breaker due to probe now still gets a moment, so that the request does not spin.
        let decision = p.decide(&refused(1, Duration::ZERO), now, deadline, NO_HOOK, || {
            SmallRng::seed_from_u64(1)
        });
        let Ok(Retry::WaitForBreaker(delay)) = decision else {
            panic!("expected a wait for the breaker, got {decision:?}");
        };
        assert!(
            delay >= ms(1) && delay <= Duration::from_micros(1500),
            "{delay:?}"
        );
    }

    #[test]
    fn a_refusal_waits_only_within_the_deadline_and_only_when_asked() {
        let p = policy();
        let now = Instant::now();
        let draw = || SmallRng::seed_from_u64(3);
        // A breaker whose time to probe again reaches the deadline: stop.
        assert_eq!(
            p.decide(
                &refused(1, ms(1000)),
                now,
                Some(now + ms(1000)),
                NO_HOOK,
                draw
            ),
            Err(Stop::Deadline)
        );
        // Unlike a hint's, a breaker's stretch is what must end before the deadline (see
        // `decide`): with 1.1 s left, the requests whose draw passes it stop, the others wait
        // as drawn; none waits past the deadline or less than the breaker's time.
        let (mut waited, mut stopped) = (0, 0);
        for seed in 0..40 {
            match p.decide(
                &refused(1, ms(1000)),
                now,
                Some(now + ms(1100)),
                NO_HOOK,
                || SmallRng::seed_from_u64(seed),
            ) {
                Ok(Retry::WaitForBreaker(delay)) => {
                    assert!(delay >= ms(1000) && delay < ms(1100), "{delay:?}");
                    waited += 1;
                }
                Err(Stop::Deadline) => stopped += 1,
                other => panic!("seed {seed}: {other:?}"),
            }
        }
        assert!(
            waited > 0 && stopped > waited,
            "{waited} waited, {stopped} stopped"
        );
        // A stretch that fits is kept as drawn; one a nanosecond too long stops.
        let Ok(Retry::WaitForBreaker(drawn)) = p.decide(
            &refused(1, ms(1000)),
            now,
            Some(now + ms(10_000)),
            NO_HOOK,
            draw,
        ) else {
            panic!("expected a wait for the breaker");
        };
        assert_eq!(
            p.decide(
                &refused(1, ms(1000)),
                now,
                Some(now + drawn + Duration::from_nanos(1)),
                NO_HOOK,
                draw
            ),
            Ok(Retry::WaitForBreaker(drawn))
        );
        assert_eq!(
            p.decide(&refused(1, ms(1000)), now, Some(now + drawn), NO_HOOK, draw),
            Err(Stop::Deadline)
        );
        // No deadline to bound the wait: the refusal counts as an attempt, and its hint is
        // waited like a server's.
        on_hint(
            p.decide(&refused(1, ms(1000)), now, None, NO_HOOK, draw),
            ms(1000),
        );
        assert_eq!(
            p.decide(&refused(4, ms(1000)), now, None, NO_HOOK, draw),
            Err(Stop::Attempts)
        );
        // Turned off: the refusal is returned at once, deadline or not, whatever attempts
        // are left (a fallback above answers now, not after the open period).
        let off = Policy {
            wait_for_breaker: false,
            wait_for_budget: false,
            ..policy()
        };
        let deadline = Some(now + ms(10_000));
        for deadline in [deadline, None] {
            assert_eq!(
                off.decide(&refused(1, ms(1000)), now, deadline, NO_HOOK, no_rng),
                Err(Stop::BreakerOpen)
            );
        }
        // A refusal without a time to come back (a throttle shedding load) is an attempt like
        // any other, and so is a refusal while isolated (not retryable at all).
        let shed = failure(Category::Rejected, 4);
        assert_eq!(
            p.decide(&shed, now, deadline, NO_HOOK, no_rng),
            Err(Stop::Attempts)
        );
        let mut isolated = refused(1, ms(1000));
        isolated.class.retryable = false;
        assert_eq!(
            p.decide(&isolated, now, deadline, NO_HOOK, no_rng),
            Err(Stop::NotRetryable)
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_pacer_lets_one_go_per_period_and_counts_the_others() {
        let pacer = Pacer::new(Instant::now(), BUDGET_PROBE);
        let now = Instant::now();
        assert_eq!(pacer.claim(now), Some(0));
        assert!(!pacer.try_claim(now), "once");
        assert!(!pacer.try_claim(now + BUDGET_PROBE - Duration::from_nanos(1)));
        assert_eq!(pacer.claim(now + BUDGET_PROBE), Some(2), "two held since");
        assert_eq!(pacer.claim(now + BUDGET_PROBE * 2), Some(0));
        // A pacer made later than the clock it is asked at (a layer built before a paused
        // runtime's clock) counts from zero.
        let early = Pacer::new(now + Duration::from_secs(5), BUDGET_PROBE);
        assert!(early.try_claim(now));
        assert!(!early.try_claim(now));
    }

    #[test]
    fn reasons_have_stable_names() {
        // The `reason` of the "not retrying" event and the metric's label.
        let names = [
            Stop::NotRetryable,
            Stop::Attempts,
            Stop::RetryAfterTooLong,
            Stop::Deadline,
            Stop::BreakerOpen,
        ]
        .map(Stop::as_str);
        assert_eq!(
            names,
            [
                "not_retryable",
                "attempts_spent",
                "retry_after_too_long",
                "deadline",
                "breaker_open"
            ]
        );
    }

    #[test]
    fn exponential_delays_until_the_limit() {
        let p = policy();
        let now = Instant::now();
        let got: Vec<_> = (1..=4)
            .map(|n| {
                p.decide(
                    &failure(Category::ServerError, n),
                    now,
                    None,
                    NO_HOOK,
                    no_rng,
                )
            })
            .collect();
        assert_eq!(
            got,
            [
                Ok(Retry::After(ms(100))),
                Ok(Retry::After(ms(200))),
                Ok(Retry::After(ms(400))),
                Err(Stop::Attempts),
            ]
        );
    }

    #[test]
    fn the_class_decides() {
        let p = policy();
        let now = Instant::now();
        for cat in [
            Category::Validation,
            Category::NotFound,
            Category::Authentication,
            Category::Cancelled,
            Category::Ignored,
        ] {
            assert_eq!(
                p.decide(&failure(cat, 1), now, None, NO_HOOK, no_rng),
                Err(Stop::NotRetryable),
                "{cat}"
            );
        }
        // A class made retryable by its classifier is retried, but never a cancellation.
        let mut f = failure(Category::Validation, 1);
        f.class.retryable = true;
        assert_eq!(
            p.decide(&f, now, None, NO_HOOK, no_rng),
            Ok(Retry::After(ms(100)))
        );
        let mut f = failure(Category::Cancelled, 1);
        f.class.retryable = true;
        assert_eq!(
            p.decide(&f, now, None, NO_HOOK, no_rng),
            Err(Stop::NotRetryable)
        );
        let mut f = failure(Category::Timeout, 1);
        f.class.retryable = false;
        assert_eq!(
            p.decide(&f, now, None, NO_HOOK, no_rng),
            Err(Stop::NotRetryable)
        );
    }

    #[test]
    fn what_counts_toward_throttling_and_what_spends_budget() {
        let hint = ms(300);
        let server = Class::new(Category::ServerError);
        let limited = Class::new(Category::RateLimited);
        let refused = Class::new(Category::Rejected);
        // Real failures of the dependency: counted, budgeted.
        assert!(counts_toward_throttling(&server));
        assert!(counts_toward_throttling(&server.with_retry_after(hint)));
        assert!(counts_toward_throttling(&limited));
        assert!(spends_budget(&server) && spends_budget(&limited));
        // Paced by the server: not counted, still budgeted.
        assert!(!counts_toward_throttling(&limited.with_retry_after(hint)));
        assert!(spends_budget(&limited.with_retry_after(hint)));
        // Refused before reaching it: never counted; free only with a time to come back.
        assert!(!counts_toward_throttling(&refused));
        assert!(!counts_toward_throttling(&refused.with_retry_after(hint)));
        assert!(spends_budget(&refused));
        assert!(!spends_budget(&refused.with_retry_after(hint)));
        // Not retryable: not counted.
        assert!(!counts_toward_throttling(&Class::new(Category::Validation)));
    }

    #[test]
    fn rate_limited_starts_from_its_own_delay() {
        let p = policy();
        let now = Instant::now();
        assert_eq!(
            p.decide(
                &failure(Category::RateLimited, 1),
                now,
                None,
                NO_HOOK,
                no_rng
            ),
            Ok(Retry::After(ms(700)))
        );
        // The cap is raised to the rate-limited delay, and still applies.
        assert_eq!(
            p.decide(
                &failure(Category::RateLimited, 2),
                now,
                None,
                NO_HOOK,
                no_rng
            ),
            Ok(Retry::After(ms(1000)))
        );
    }

    #[test]
    fn retry_after_is_the_delay_with_a_ceiling() {
        let p = policy();
        let now = Instant::now();
        let draw = || SmallRng::seed_from_u64(5);
        let with_hint = |hint| {
            let mut f = failure(Category::RateLimited, 1);
            f.class = f.class.with_retry_after(hint);
            p.decide(&f, now, None, NO_HOOK, draw)
        };
        // A hint shorter than the rate-limited delay is honoured, not raised to that delay.
        on_hint(with_hint(ms(10)), ms(10));
        // Whatever the attempt, and for other categories too.
        let mut f = failure(Category::ServerError, 2);
        f.class = f.class.with_retry_after(ms(30));
        on_hint(p.decide(&f, now, None, NO_HOOK, draw), ms(30));
        on_hint(with_hint(ms(3000)), ms(3000));
        on_hint(with_hint(ms(4999)), ms(4999));
        // The ceiling is on the hint, not on the stretched wait.
        on_hint(with_hint(ms(5000)), ms(5000));
        assert_eq!(with_hint(ms(5001)), Err(Stop::RetryAfterTooLong));
    }

    #[test]
    fn a_hint_is_stretched_by_up_to_a_tenth_never_shortened() {
        let p = policy();
        let now = Instant::now();
        let mut f = failure(Category::RateLimited, 1);
        f.class = f.class.with_retry_after(ms(1000));
        let waits: Vec<Duration> = (0..200)
            .map(|seed| {
                let draw = || SmallRng::seed_from_u64(seed);
                on_hint(p.decide(&f, now, None, NO_HOOK, draw), ms(1000))
            })
            .collect();
        let (least, most) = (waits.iter().min().unwrap(), waits.iter().max().unwrap());
        // Spread over the whole tenth: callers refused together come back apart.
        assert!(*least < ms(1010), "{least:?}");
        assert!(*most > ms(1090), "{most:?}");
        // The same seed, the same wait.
        let draw = || SmallRng::seed_from_u64(0);
        assert_eq!(
            p.decide(&f, now, None, NO_HOOK, draw),
            Ok(Retry::After(waits[0]))
        );
    }

    /// A hint is the classifier's to set, and may be anything up to `Duration::MAX` ("never",
    /// to a classifier): stretching it must neither panic nor shorten it.
    #[test]
    fn a_hint_of_any_length_is_stretched_without_panicking() {
        let now = Instant::now();
        let deadline = Some(now + ms(10_000));
        for hint in [
            Duration::MAX,
            Duration::MAX / 2,
            Duration::from_secs(u64::MAX / 3),
            // Longer than an f64 holds to the nanosecond: rounding must not shorten it.
            Duration::from_nanos((1 << 53) + 1),
        ] {
            for seed in 0..20 {
                let draw = || SmallRng::seed_from_u64(seed);
                // An open breaker saying so, under a deadline: the wait cannot fit, so stop.
                assert_eq!(
                    policy().decide(&refused(1, hint), now, deadline, NO_HOOK, draw),
                    Err(Stop::Deadline),
                    "{hint:?}"
                );
                // A server's hint, with a ceiling that honours every hint and no deadline: the
                // stretched hint, saturated, never less than the hint.
                let p = Policy {
                    max_retry_after: Duration::MAX,
                    ..policy()
                };
                let mut f = failure(Category::RateLimited, 1);
                f.class = f.class.with_retry_after(hint);
                let decision = p.decide(&f, now, None, NO_HOOK, draw);
                let Ok(Retry::After(wait)) = decision else {
                    panic!("expected a retry after {hint:?}, got {decision:?}");
                };
                let most = Duration::try_from_secs_f64(hint.as_secs_f64() * (1.0 + HINT_SPREAD))
                    .unwrap_or(Duration::MAX);
                assert!(wait >= hint && wait <= most, "{wait:?} from {hint:?}");
                // Under a deadline: stop, as for any wait that ends after it.
                assert_eq!(
                    p.decide(&f, now, deadline, NO_HOOK, draw),
                    Err(Stop::Deadline)
                );
            }
        }
    }

    #[test]
    fn a_wait_no_instant_can_hold_ends_in_thirty_years() {
        let now = Instant::now();
        assert_eq!(wake_at(now, ms(250)), now + ms(250));
        assert_eq!(wake_at(now, Duration::ZERO), now);
        // What `tokio::time::sleep(Duration::MAX)` does, rather than an overflow panic: 30
        // years of 365 days.
        assert_eq!(FAR_FUTURE, Duration::from_secs(946_080_000));
        assert_eq!(wake_at(now, Duration::MAX), now + FAR_FUTURE);
        assert_eq!(
            wake_at(now, Duration::from_secs(u64::MAX / 2)),
            now + FAR_FUTURE
        );
    }

    #[test]
    fn deadline_boundaries() {
        let p = policy();
        let now = Instant::now();
        let at = |left: u64| {
            p.decide(
                &failure(Category::Network, 1),
                now,
                Some(now + ms(left)),
                NO_HOOK,
                no_rng,
            )
        };
        // The first retry waits 100 ms: it must start before the deadline.
        assert_eq!(at(101), Ok(Retry::After(ms(100))));
        assert_eq!(at(100), Err(Stop::Deadline));
        assert_eq!(at(99), Err(Stop::Deadline));
        // The same for a server's hint.
        let mut f = failure(Category::RateLimited, 1);
        f.class = f.class.with_retry_after(ms(2000));
        let draw = || SmallRng::seed_from_u64(2);
        assert_eq!(
            p.decide(&f, now, Some(now + ms(1999)), NO_HOOK, draw),
            Err(Stop::Deadline)
        );
        assert_eq!(
            p.decide(&f, now, Some(now + ms(2000)), NO_HOOK, draw),
            Err(Stop::Deadline)
        );
        // The hint is what must end before the deadline, not its stretch: a stretch that ends
        // before it is kept as drawn...
        let wait = on_hint(p.decide(&f, now, None, NO_HOOK, draw), ms(2000));
        assert!(wait > ms(2000), "seed 2 stretches the hint: {wait:?}");
        assert_eq!(
            p.decide(&f, now, Some(now + wait + ms(1)), NO_HOOK, draw),
            Ok(Retry::After(wait))
        );
        // ...and one that does not is drawn again within the time left (it used to stop the
        // request: the stretched wait was what had to end before the deadline).
        for left in [wait, ms(2001)] {
            let decision = p.decide(&f, now, Some(now + left), NO_HOOK, draw);
            let Ok(Retry::After(delay)) = decision else {
                panic!("{left:?} left: expected a retry, got {decision:?}");
            };
            assert!(delay >= ms(2000) && delay < left, "{delay:?}");
        }
        // The same for the jitter: the backoff's lower bound must end before the deadline,
        // and the draw is made within the time left. Full jitter over 0 to 100 ms, 50 ms left:
        for seed in 0..20 {
            let full = Policy {
                jitter: Jitter::Full,
                ..policy()
            };
            let decision = full.decide(
                &failure(Category::Network, 1),
                now,
                Some(now + ms(50)),
                NO_HOOK,
                || SmallRng::seed_from_u64(seed),
            );
            let Ok(Retry::After(delay)) = decision else {
                panic!("seed {seed}: expected a retry, got {decision:?}");
            };
            assert!(delay < ms(50), "{delay:?}");
        }
        // Equal jitter over 50 to 100 ms: 50 ms left is too little, 51 is enough.
        let equal = Policy {
            jitter: Jitter::Equal,
            ..policy()
        };
        let network = failure(Category::Network, 1);
        assert_eq!(
            equal.decide(&network, now, Some(now + ms(50)), NO_HOOK, draw),
            Err(Stop::Deadline)
        );
        let decision = equal.decide(&network, now, Some(now + ms(51)), NO_HOOK, draw);
        let Ok(Retry::After(delay)) = decision else {
            panic!("expected a retry, got {decision:?}");
        };
        assert!(delay >= ms(50) && delay < ms(51), "{delay:?}");
    }

    #[test]
    fn a_retry_starts_only_with_at_least_the_least_attempt_time_left() {
        let p = Policy {
            min_attempt_time: ms(10),
            ..policy()
        };
        let now = Instant::now();
        let network = failure(Category::Network, 1);
        let at = |p: &Policy, f: &Failure, left: u64, seed: u64| {
            p.decide(f, now, Some(now + ms(left)), NO_HOOK, || {
                SmallRng::seed_from_u64(seed)
            })
        };
        // The backoff's 100 ms: it must end at least 10 ms before the deadline.
        assert_eq!(at(&p, &network, 110, 0), Ok(Retry::After(ms(100))));
        assert_eq!(at(&p, &network, 109, 0), Err(Stop::Deadline));
        // Without a deadline, nothing changes.
        assert_eq!(
            p.decide(&network, now, None, NO_HOOK, no_rng),
            Ok(Retry::After(ms(100)))
        );
        // A hint's stretch drawn again ends at least 10 ms before the deadline: 2 s asked,
        // 2.05 s left, every draw within 2 s..=2.04 s.
        let mut hinted = failure(Category::RateLimited, 1);
        hinted.class = hinted.class.with_retry_after(ms(2000));
        for seed in 0..40 {
            let Ok(Retry::After(delay)) = at(&p, &hinted, 2050, seed) else {
                panic!("seed {seed}: expected a retry");
            };
            assert!(delay >= ms(2000) && delay <= ms(2040), "{delay:?}");
        }
        assert_eq!(at(&p, &hinted, 2010, 0), Ok(Retry::After(ms(2000))));
        assert_eq!(at(&p, &hinted, 2009, 0), Err(Stop::Deadline));
        // The same jitter with no least time may end in the deadline's last 10 ms.
        let late = (0..40)
            .map(|seed| match at(&policy(), &hinted, 2050, seed) {
                Ok(Retry::After(delay)) => delay,
                other => panic!("seed {seed}: {other:?}"),
            })
            .filter(|delay| *delay > ms(2040))
            .count();
        assert!(late > 0, "no draw in the last 10 ms");
        // A wait for the breaker that ends less than 10 ms before the deadline stops, one that
        // leaves 10 ms waits.
        let Ok(Retry::WaitForBreaker(drawn)) = at(&p, &refused(1, ms(1000)), 10_000, 3) else {
            panic!("expected a wait for the breaker");
        };
        let breaker = |deadline| {
            p.decide(&refused(1, ms(1000)), now, Some(deadline), NO_HOOK, || {
                SmallRng::seed_from_u64(3)
            })
        };
        let leaves_10_ms = now + drawn + ms(10);
        assert_eq!(breaker(leaves_10_ms), Ok(Retry::WaitForBreaker(drawn)));
        assert_eq!(
            breaker(leaves_10_ms - Duration::from_nanos(1)),
            Err(Stop::Deadline)
        );
        // A credential refresh, sent at once: at least 10 ms left.
        let auth = failure(Category::Authentication, 1);
        let refresh = |left: u64| p.decide(&auth, now, Some(now + ms(left)), Some("hook"), no_rng);
        assert_eq!(refresh(10), Ok(Retry::Refresh("hook", Duration::ZERO)));
        assert_eq!(refresh(9), Err(Stop::Deadline));
        // The rule itself: at least the floor, and never at or after the deadline.
        assert!(!too_late(now, now + ms(10), ms(10)));
        assert!(too_late(
            now,
            now + ms(10) - Duration::from_nanos(1),
            ms(10)
        ));
        assert!(too_late(now, now, Duration::ZERO));
        assert!(!too_late(
            now,
            now + Duration::from_nanos(1),
            Duration::ZERO
        ));
        assert!(too_late(now + ms(20), now + ms(10), Duration::ZERO));
        // Waking, a tick is allowed for the timer's rounding, but never the deadline itself.
        assert!(!too_late_on_waking(now, now + ms(9), ms(10)));
        assert!(too_late_on_waking(
            now,
            now + ms(9) - Duration::from_nanos(1),
            ms(10)
        ));
        assert!(!too_late_on_waking(
            now,
            now + Duration::from_nanos(1),
            ms(1)
        ));
        assert!(too_late_on_waking(now, now, ms(1)));
        assert!(too_late_on_waking(now, now, Duration::ZERO));
    }

    #[test]
    fn authentication_refreshes_once_and_only_with_a_hook() {
        let p = policy();
        let hook = Some("hook");
        let now = Instant::now();
        let mut f = failure(Category::Authentication, 1);
        assert_eq!(
            p.decide(&f, now, None, hook, no_rng),
            Ok(Retry::Refresh("hook", Duration::ZERO))
        );
        f.refreshed = true;
        f.attempts = 2;
        assert_eq!(
            p.decide(&f, now, None, hook, no_rng),
            Err(Stop::NotRetryable)
        );
        let mut f = failure(Category::Authentication, 4);
        f.limit = 4;
        assert_eq!(p.decide(&f, now, None, hook, no_rng), Err(Stop::Attempts));
        let f = failure(Category::Authentication, 1);
        assert_eq!(
            p.decide(&f, now, Some(now), hook, no_rng),
            Err(Stop::Deadline)
        );
        // Without a hook it is not retried; a hook changes nothing for other failures.
        assert_eq!(
            p.decide(&f, now, None, NO_HOOK, no_rng),
            Err(Stop::NotRetryable)
        );
        assert_eq!(
            p.decide(&failure(Category::Network, 1), now, None, hook, no_rng),
            Ok(Retry::After(ms(100)))
        );
    }

    #[test]
    fn jitter_draws_from_the_given_rng() {
        let p = Policy {
            jitter: Jitter::Full,
            ..policy()
        };
        let now = Instant::now();
        let draw = |seed| {
            (1..=3)
                .map(|n| {
                    p.decide(&failure(Category::Network, n), now, None, NO_HOOK, || {
                        SmallRng::seed_from_u64(seed)
                    })
                })
                .collect::<Vec<_>>()
        };
        assert_eq!(draw(1), draw(1));
        assert_ne!(draw(1), draw(2));
        for (n, d) in draw(3).into_iter().enumerate() {
            let Ok(Retry::After(d)) = d else {
                panic!("{d:?}")
            };
            assert!(d <= ms(100) * 2u32.pow(n as u32));
        }
    }
}
