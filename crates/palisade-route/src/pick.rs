//! Picking an endpoint for a call, in named steps.
//!
//! [`pick`] runs them in order:
//!
//! 1. **No scan** while nothing changed since every endpoint was seen plainly healthy in one
//!    tier ([`two_choices`] over all of them; no clock read).
//! 2. **Eject** the endpoints that reached the consecutive-failure threshold, within the cap
//!    ([`eject_due`]).
//! 3. **Scan** each endpoint's eligibility into a stack cache ([`Scan`], [`look`]); if all are
//!    plainly healthy in one tier, remember that for step 1 and use [`two_choices`].
//! 4. **Panic mode** when health lets too little traffic through ([`panics`]), per tier and only
//!    when the tiers together lack healthy capacity ([`panicking`]): health is ignored in a
//!    tier that panics, but never a cool-down ([`weight`]).
//! 5. **Tiers**: the lowest tier keeps what its healthy capacity allows and spills the rest to
//!    the next ([`choose_tier`]); with no tier with weight, the endpoints cooling down after a
//!    rate limit take the call as a last resort ([`last_resort`]), and with none of those
//!    either the pick fails with the soonest return ([`retry_after`]). A pick that is to
//!    [avoid](Avoid) every eligible endpoint of that tier (a retry's single failed primary)
//!    goes to the lowest other tier with an eligible endpoint it need not avoid
//!    ([`retry_tier`]).
//! 6. **Draws**: two weighted draws in the tier ([`Draws`]), skipping the endpoints to avoid
//!    (the one that failed a retried request, those whose readiness failed earlier in the
//!    same `poll_ready`) when another is eligible ([`skip`]); the less loaded wins
//!    ([`less_loaded`]). The draws may repeat an endpoint: drawn without replacement, the
//!    pair of two endpoints would always be the same two, and load alone would decide
//!    between an endpoint ramping up at a fifth of its share and a healthy one. Step 1's
//!    draws, all weights equal, are two distinct endpoints.
//!
//! Every step is a function of what it is given (endpoint states, slots, the rng), so each is
//! tested alone below; none allocates.

use std::time::Duration;

use palisade_core::sync::atomic::{AtomicU64, Ordering};
use rand::Rng;

use crate::endpoint::EndpointState;
use crate::{NoHealthyEndpoint, RouteConfig};

/// What one look at an endpoint learns about it.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub(crate) struct Slot {
    /// The traffic share health allows, zero while ejected or cooling down.
    pub(crate) weight: f64,
    /// What it counts for in the capacity panic mode and the tiers weigh: its health's share
    /// (zero while ejected), or all of it for a new endpoint in slow start, which is healthy
    /// (see [`panics`]). A cool-down does not lower it: a rate limit paces an endpoint, it
    /// says nothing of its health, and the picks' weights ([`weight`], [`last_resort`])
    /// already keep calls off it.
    pub(crate) counted: f64,
    pub(crate) tier: u8,
    pub(crate) cooling: bool,
    /// While it cools down (and is not ejected), the share health would allow it: its
    /// weight when every endpoint that could take the call cools down ([`last_resort`]).
    /// Zero otherwise.
    pub(crate) cooled: f64,
    /// When it comes back by itself (end of ejection, cool-down or hold), if later than now
    /// and its health gives it a share then; 0 otherwise (one that active checks took out of
    /// traffic comes back through them alone, whatever its ejection or cool-down).
    pub(crate) back: u64,
}

/// Endpoints a scan keeps on the stack; beyond this, slots are looked at again when needed.
pub(crate) const CACHED: usize = 64;

/// Looks at one endpoint at `now`: its weight (its health's share, zero while ejected or
/// cooling down), what it counts for in the healthy capacity (its health's share, cooling down
/// or not), tier, whether it cools down, and when it comes back by itself. Without active
/// checks, an endpoint the health machine holds out comes back for a trial when its hold ends.
pub(crate) fn look(s: &EndpointState, cfg: &RouteConfig, now: u64) -> Slot {
    let ejected = s.ejected_until();
    let cooldown = s.cooldown_until();
    let cooling = cooldown > now;
    let health = s.health();
    let trials = s.trials();
    let share = if ejected > now {
        0.0
    } else {
        health.share(&cfg.health, now, trials)
    };
    let (weight, cooled) = if cooling { (0.0, share) } else { (share, 0.0) };
    // By the share, not the weight: a healthy endpoint cooling down after a rate limit is
    // healthy capacity, and counted as lost it would start panic mode, which sends calls to
    // the ejected endpoints while a healthy one could take them.
    let counted = if share > 0.0 && s.starting(health) {
        1.0
    } else {
        share
    };
    let held = if trials {
        health.held_until(&cfg.health)
    } else {
        0
    };
    let back = ejected.max(cooldown).max(held);
    // A return only if its health lets it take calls then: without active checks a hold ends
    // in a trial, but one the checks found failed stays out when its ejection or cool-down
    // ends, and a `retry_after` naming that instant would be waited for in vain.
    let back = if back > now && health.share(&cfg.health, back, trials) > 0.0 {
        back
    } else {
        0
    };
    Slot {
        weight,
        counted,
        tier: s.tier,
        cooling,
        cooled,
        back,
    }
}

/// [`look`] beyond the scan's cache (more than [`CACHED`] endpoints), out of line.
#[cold]
#[inline(never)]
fn look_again(s: &EndpointState, cfg: &RouteConfig, now: u64) -> Slot {
    look(s, cfg, now)
}

/// Ejects the endpoints that reached [`consecutive_failures`](crate::OutlierConfig) and are
/// not ejected yet, in order, as long as fewer than
/// [`max_ejected`](crate::OutlierConfig::max_ejection_ratio) are ejected (always allowing
/// one). Looks no further than one pass over the failure counts unless one is due: the
/// failure path.
pub(crate) fn eject_due<E: AsRef<EndpointState>>(endpoints: &[E], cfg: &RouteConfig, now: u64) {
    let Some(threshold) = cfg.outlier.consecutive_failures else {
        return;
    };
    let due = |s: &EndpointState| s.consecutive_failures() >= threshold && s.ejected_until() <= now;
    if !endpoints.iter().any(|e| due(e.as_ref())) {
        return;
    }
    let max_ejected = cfg.outlier.max_ejected(endpoints.len());
    let count = || {
        endpoints
            .iter()
            .filter(|e| e.as_ref().ejected_at(now))
            .count()
    };
    let mut ejected = count();
    for e in endpoints {
        if ejected >= max_ejected {
            break;
        }
        // Claimed, then counted again: another clone ejecting on another thread meanwhile
        // does not take the ejections past the cap (see `EndpointState::try_eject`).
        if due(e.as_ref()) && e.as_ref().try_eject(cfg, now, || count() <= max_ejected) {
            ejected += 1;
        }
    }
}

/// One look at every endpoint ([`look`]), the first [`CACHED`] kept in a cache on the
/// caller's stack.
#[derive(Debug)]
pub(crate) struct Scan<'a> {
    cache: &'a [Slot; CACHED],
    /// Endpoints with some health share (cooling down or not): some healthy capacity.
    pub(crate) available: usize,
    /// The sum of what they count for ([`Slot::counted`]): the share of the endpoints'
    /// capacity health lets through. A cool-down takes nothing from it.
    pub(crate) capacity: f64,
    /// Every endpoint at full weight, all in the first endpoint's tier: plainly healthy.
    pub(crate) uniform: bool,
    /// Every endpoint in the first endpoint's tier (what panic mode needs to know).
    pub(crate) one_tier: bool,
}

impl<'a> Scan<'a> {
    /// Looks at every endpoint at `now`, keeping the first slots in `cache`; `endpoints` is
    /// not empty. (The cache is the caller's: returned with the scan, it would be copied.)
    #[inline]
    pub(crate) fn new<E: AsRef<EndpointState>>(
        cache: &'a mut [Slot; CACHED],
        endpoints: &[E],
        cfg: &RouteConfig,
        now: u64,
    ) -> Scan<'a> {
        let mut available = 0;
        let mut capacity = 0.0;
        let mut uniform = true;
        let mut one_tier = true;
        let first_tier = endpoints[0].as_ref().tier;
        for (i, e) in endpoints.iter().enumerate() {
            let slot = look(e.as_ref(), cfg, now);
            if slot.counted > 0.0 {
                available += 1;
                capacity += slot.counted;
            }
            one_tier &= slot.tier == first_tier;
            uniform &= slot.weight == 1.0 && one_tier;
            if let Some(cached) = cache.get_mut(i) {
                *cached = slot;
            }
        }
        Scan {
            cache,
            available,
            capacity,
            uniform,
            one_tier,
        }
    }

    /// Endpoint `i`'s slot: from the cache, or looked at again beyond it. Always inlined,
    /// the look beyond the cache never: every step reads slots, most from the cache.
    #[inline(always)]
    pub(crate) fn slot<E: AsRef<EndpointState>>(
        &self,
        endpoints: &[E],
        cfg: &RouteConfig,
        i: usize,
        now: u64,
    ) -> Slot {
        match self.cache.get(i) {
            Some(slot) => *slot,
            None => look_again(endpoints[i].as_ref(), cfg, now),
        }
    }
}

/// Whether `n` endpoints panic: health lets through less than
/// [`panic_ratio`](RouteConfig::panic_ratio) of their traffic (`capacity`, the sum of their
/// health shares, [`Slot::counted`]: an endpoint recovering at a fifth of its share counts a
/// fifth). Never when panic mode is off. With tiers, this is asked of each tier, when the
/// tiers together lack healthy capacity ([`panicking`]).
///
/// An endpoint cooling down after a rate limit counts its health's share: it is healthy, and
/// the server only asked for a pause, which [`weight`] keeps. Counted as lost, one 429 from a
/// healthy endpoint among three, one of them ejected, started panic mode, and the ejected
/// endpoint took two calls in five while the third, healthy, could have taken them all.
///
/// Counted by weight, not by endpoints with any: when every endpoint has been out (an outage
/// of them all) and the first comes back on trial at the ramp's first step, a count would end
/// panic mode there and give that one endpoint all the traffic at once, the load its ramp
/// exists to spare it, while the others, held out, get none to prove themselves with. In
/// palisade's simulator, a brownout over two replicas served 91.7 % of what their returning
/// capacity allowed that way, and 99.5 % counted by weight (one replica alone: 99.4 %).
///
/// A new endpoint in slow start counts in full, as Envoy's panic threshold counts healthy
/// hosts whatever their slow-start weight: it is healthy, and its ramp only spares it a full
/// share while it warms. Counted by its ramp, a fleet that discovery announces at once (every
/// endpoint new, at the ramp's first 20 %) would panic for the ramp's first minute and send
/// an endpoint it has ejected its full share of calls.
#[inline]
pub(crate) fn panics(cfg: &RouteConfig, capacity: f64, n: usize) -> bool {
    cfg.panic_ratio
        .is_some_and(|ratio| capacity < ratio * n as f64)
}

/// The tiers that panic: a set of tier numbers, on the stack.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Panicking([u64; 4]);

impl Panicking {
    fn insert(&mut self, tier: u8) {
        self.0[usize::from(tier / 64)] |= 1 << (tier % 64);
    }

    /// Whether `tier` panics.
    #[inline]
    pub(crate) fn contains(&self, tier: u8) -> bool {
        self.0[usize::from(tier / 64)] & (1 << (tier % 64)) != 0
    }

    /// Whether any tier panics.
    pub(crate) fn any(&self) -> bool {
        self.0 != [0; 4]
    }
}

/// The tiers of the `n` endpoints, in increasing order, each with the healthy capacity of its
/// slots (the sum of [`Slot::counted`]: cool-downs take nothing from it) and its number of
/// endpoints.
fn tiers(n: usize, get: impl Fn(usize) -> Slot + Copy) -> impl Iterator<Item = (u8, f64, usize)> {
    let first = (0..n).map(|i| get(i).tier).min();
    let next = move |&t: &u8| (0..n).map(|i| get(i).tier).filter(|u| *u > t).min();
    std::iter::successors(first, next).map(move |tier| {
        let (sum, count) = (0..n)
            .map(&get)
            .filter(|s| s.tier == tier)
            .fold((0.0, 0usize), |(sum, c), s| (sum + s.counted, c + 1));
        (tier, sum, count)
    })
}

/// Which tiers panic, as Envoy's
/// [panic threshold](https://www.envoyproxy.io/docs/envoy/latest/intro/arch_overview/upstream/load_balancing/panic_threshold)
/// works with priority levels: only while the tiers together lack healthy capacity (the sum
/// over tiers of `min(1, mean health share × overprovisioning)`, Envoy's normalized total
/// availability, is below 1), each tier whose own health lets through less than the ratio of
/// its traffic ([`panics`]). Health, not cool-downs: an endpoint cooling down counts its
/// health's share here, as in [`panics`]. A tier with no healthy capacity at all panics only
/// when no tier has any (Envoy's total panic): while another tier can take calls, the tier
/// choice gives it none, as Envoy gives such a priority no load. With one tier, that tier
/// panics whenever [`panics`] says so.
///
/// Without the tiers' condition, a panicking tier weighs all of its endpoints in full and
/// keeps every call: two primaries down with one healthy standby (a third of the endpoints'
/// traffic, below half) sent every call to the dead primaries while the standby idled.
pub(crate) fn panicking(
    cfg: &RouteConfig,
    n: usize,
    get: impl Fn(usize) -> Slot + Copy,
    scan: &Scan<'_>,
) -> Panicking {
    let mut out = Panicking::default();
    if cfg.panic_ratio.is_none() {
        return out;
    }
    if scan.one_tier {
        if panics(cfg, scan.capacity, n) {
            out.insert(get(0).tier);
        }
        return out;
    }
    let total: f64 = tiers(n, get)
        .map(|(_, sum, count)| (sum / count as f64 * cfg.overprovisioning).min(1.0))
        .sum();
    if total >= 1.0 {
        return out;
    }
    let any_capacity = scan.available > 0;
    for (tier, sum, count) in tiers(n, get) {
        if panics(cfg, sum, count) && (sum > 0.0 || !any_capacity) {
            out.insert(tier);
        }
    }
    out
}

/// The weight a pick gives a slot: none while it cools down after a rate limit (even in panic
/// mode: the server asked for a pause, and other endpoints can take the call; when none can,
/// see [`last_resort`]), all of it in panic mode, its health's share otherwise.
#[inline]
pub(crate) fn weight(slot: Slot, panic: bool) -> f64 {
    if slot.cooling {
        0.0
    } else if panic {
        1.0
    } else {
        slot.weight
    }
}

/// The weight a pick gives a slot when no endpoint has any by [`weight`], because every one
/// that could take the call cools down after a rate limit: its health's share (all of it in
/// panic mode) if it cools down, none otherwise.
///
/// A rate limit's `retry_after` is the refused request's: its retry waits for it. A cool-down
/// steers the other calls to endpoints that did not refuse, while there are any. When there
/// are none, failing every call locally until the soonest cool-down ends would waste all the
/// capacity the server's limiter has meanwhile (a limiter refills as it goes), and release the
/// waiting calls together, in a burst that spends it at once and starts the next cool-down:
/// in palisade's simulator, two replicas each limited to 50 calls a second and sent 160 a
/// second between them served 12 % of what their limits allowed that way, and 100 % with
/// this, as one endpoint alone does. So the call goes on, and the limiter decides.
#[inline]
pub(crate) fn last_resort(slot: Slot, panic: bool) -> f64 {
    if !slot.cooling {
        0.0
    } else if panic {
        1.0
    } else {
        slot.cooled
    }
}

/// The tier the call goes to, as Envoy shares load among priority levels. Each tier with an
/// endpoint to pick (some `weight`) has a capacity, `min(1, mean health × overprovisioning)`
/// by `health` (the endpoints' health shares, panic mode aside: a tier in panic picks among
/// all its endpoints, but is worth only its healthy ones). In increasing order, each tier
/// takes its capacity of the load, up to what the tiers before it left; when the capacities
/// add up to less than a whole, each takes its share of their sum; when they add up to
/// nothing (every tier in panic, nothing healthy), the first takes it all. One draw of `rng`
/// decides, none when the first tier takes everything. `None` when no tier has weight.
pub(crate) fn choose_tier(
    n: usize,
    get: impl Fn(usize) -> Slot,
    weight: impl Fn(Slot) -> f64,
    health: impl Fn(Slot) -> f64,
    overprovisioning: f64,
    rng: &mut impl Rng,
) -> Option<u8> {
    let next = |t: u8| (0..n).map(|i| get(i).tier).filter(|u| *u > t).min();
    // A tier's capacity, if it has an endpoint to pick.
    let capacity = |tier: u8| {
        let (sum, healthy, count) = (0..n)
            .map(&get)
            .filter(|s| s.tier == tier)
            .fold((0.0, 0.0, 0usize), |(sum, h, c), s| {
                (sum + weight(s), h + health(s), c + 1)
            });
        (sum > 0.0).then(|| (healthy / count as f64 * overprovisioning).clamp(0.0, 1.0))
    };
    let tiers = || std::iter::successors((0..n).map(|i| get(i).tier).min(), move |t| next(*t));
    let mut first = None;
    let mut total = 0.0;
    for tier in tiers() {
        if let Some(c) = capacity(tier) {
            first.get_or_insert((tier, c));
            total += c;
            if total >= 1.0 {
                break;
            }
        }
    }
    let (first, first_capacity) = first?;
    if total <= 0.0 || first_capacity >= 1.0 {
        return Some(first);
    }
    // Below a whole, the loads are the capacities' shares of their sum.
    let scale = if total < 1.0 { total } else { 1.0 };
    let draw = rng.random::<f64>();
    let (mut taken, mut last) = (0.0, first);
    for tier in tiers() {
        let Some(c) = capacity(tier) else {
            continue;
        };
        let load = if total < 1.0 {
            c / scale
        } else {
            c.min(1.0 - taken)
        };
        if load <= 0.0 {
            continue;
        }
        last = tier;
        taken += load;
        if draw < taken {
            return Some(tier);
        }
    }
    // Rounding past the end: the last tier that took some.
    Some(last)
}

/// How long until the first endpoint comes back by itself (ejection, cool-down or hold over),
/// when none can take the call now.
pub(crate) fn retry_after(n: usize, get: impl Fn(usize) -> Slot, now: u64) -> Option<Duration> {
    (0..n)
        .map(|i| get(i).back)
        .filter(|back| *back > now)
        .min()
        .map(|back| Duration::from_millis(back - now))
}

/// What a pick steers away from while another endpoint is eligible: the endpoint that failed
/// the last attempt of the request a retry sends again (by its token), and the endpoints whose
/// readiness failed earlier in the same `poll_ready` (by position).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Avoid<'a> {
    /// The token of the endpoint that failed the retried request's last attempt.
    pub(crate) token: Option<u64>,
    /// Positions whose readiness failed, one bit each (bit `i % 64` of word `i / 64`); empty
    /// when none did.
    pub(crate) not_ready: &'a [u64],
}

impl Avoid<'_> {
    /// Nothing to avoid.
    pub(crate) const NONE: Avoid<'static> = Avoid {
        token: None,
        not_ready: &[],
    };

    /// Avoids the endpoint with token `token`, if any.
    pub(crate) fn token(token: Option<u64>) -> Avoid<'static> {
        Avoid {
            token,
            not_ready: &[],
        }
    }

    /// Whether there is nothing to avoid: the pick may take the no-scan path.
    #[inline]
    pub(crate) fn is_empty(&self) -> bool {
        self.token.is_none() && self.not_ready.is_empty()
    }

    /// Whether endpoint `i`, with token `token`, is to be avoided.
    #[inline]
    pub(crate) fn contains(&self, i: usize, token: u64) -> bool {
        self.token == Some(token)
            || self
                .not_ready
                .get(i / 64)
                .is_some_and(|word| word & (1 << (i % 64)) != 0)
    }

    /// What the pick can avoid among the `n` endpoints: all of it while an `eligible`
    /// endpoint is left besides; else only the endpoints whose readiness failed, while one is
    /// left besides those (back to the retry's failed endpoint, which may well be ready,
    /// rather than to an endpoint whose readiness just failed); else nothing.
    pub(crate) fn within(
        self,
        n: usize,
        eligible: impl Fn(usize) -> bool,
        token: impl Fn(usize) -> u64,
    ) -> Self {
        let left = |avoid: &Avoid<'_>| (0..n).any(|i| eligible(i) && !avoid.contains(i, token(i)));
        if self.is_empty() || left(&self) {
            return self;
        }
        let not_ready = Avoid {
            token: None,
            ..self
        };
        if self.token.is_some() && !not_ready.is_empty() && left(&not_ready) {
            return not_ready;
        }
        Avoid::NONE
    }
}

/// Whether the draws skip the endpoints to `avoid`: when another candidate is left, not when
/// every candidate is one to avoid (a retry on the same endpoint beats no retry).
pub(crate) fn skip(
    n: usize,
    candidate: impl Fn(usize) -> bool,
    token: impl Fn(usize) -> u64,
    avoid: Avoid<'_>,
) -> bool {
    !avoid.is_empty() && (0..n).any(|i| candidate(i) && !avoid.contains(i, token(i)))
}

/// The tier a call goes to: `chosen`, unless every eligible endpoint `chosen` could give it
/// is one to `avoid` (the endpoint that failed the retried request, say) while another tier
/// has an eligible endpoint not to avoid; then the lowest such tier. With none anywhere, the
/// call stays on `chosen` and goes back to an endpoint it avoided ([`skip`]).
///
/// A retry sent back to the endpoint that just failed it, while a standby could take it,
/// fails again for nothing: with a single primary, every retry of a request it failed would
/// go to it until enough failures eject it (five in a row by default), which a caller sending
/// one request at a time takes seconds to reach. Envoy's `previous_priorities` retry plugin
/// makes the same move across priorities. A pick again after a readiness failure moves alike:
/// a single primary whose readiness fails leaves the call to the standby.
pub(crate) fn retry_tier(
    n: usize,
    chosen: u8,
    tier: impl Fn(usize) -> u8,
    eligible: impl Fn(usize) -> bool,
    token: impl Fn(usize) -> u64,
    avoid: Avoid<'_>,
) -> u8 {
    if avoid.is_empty() {
        return chosen;
    }
    let other = |i: usize| eligible(i) && !avoid.contains(i, token(i));
    if (0..n).any(|i| tier(i) == chosen && other(i)) {
        return chosen;
    }
    (0..n)
        .filter(|&i| other(i))
        .map(&tier)
        .min()
        .unwrap_or(chosen)
}

/// Weighted draws among the eligible endpoints: each is drawn with probability its weight
/// over their total.
pub(crate) struct Draws<E, W> {
    n: usize,
    eligible: E,
    weight: W,
    total: f64,
}

impl<E: Fn(usize) -> bool, W: Fn(usize) -> f64> Draws<E, W> {
    /// Draws among the endpoints below `n` that are `eligible`, by `weight`.
    pub(crate) fn new(n: usize, eligible: E, weight: W) -> Self {
        let total = (0..n).filter(|&i| eligible(i)).map(&weight).sum();
        Draws {
            n,
            eligible,
            weight,
            total,
        }
    }

    /// One draw: the eligible endpoint whose stretch of `0..total` holds a uniform draw of
    /// `rng`; the last eligible one if rounding runs past the end.
    pub(crate) fn draw(&self, rng: &mut impl Rng) -> usize {
        let mut r = rng.random::<f64>() * self.total;
        let mut last = 0;
        for i in (0..self.n).filter(|&i| (self.eligible)(i)) {
            let w = (self.weight)(i);
            last = i;
            if r < w {
                return i;
            }
            r -= w;
        }
        last
    }
}

/// Power of two choices: `b` if it has strictly fewer calls in flight than `a`, else `a`.
#[inline]
pub(crate) fn less_loaded(a: usize, b: usize, load: impl Fn(usize) -> u32) -> usize {
    if load(b) < load(a) { b } else { a }
}

/// Power of two choices among all `n` endpoints: two distinct endpoints drawn uniformly (the
/// only one when `n` is 1), the less loaded wins. The pick while every endpoint is plainly
/// healthy.
///
/// The two are distinct, as in tower's `p2c` balancer: drawn with replacement, the same
/// endpoint would come up twice in `1/n` of picks (half of them with two endpoints), and each
/// such pick is a blind one that ignores load.
#[inline]
pub(crate) fn two_choices(rng: &mut impl Rng, n: usize, load: impl Fn(usize) -> u32) -> usize {
    if n < 2 {
        return 0;
    }
    let a = rng.random_range(0..n);
    let b = rng.random_range(0..n - 1);
    let b = if b >= a { b + 1 } else { b };
    less_loaded(a, b, load)
}

/// Picks an endpoint of `endpoints`: the steps of the [module](self) in order, steering away
/// from what `avoid` names while another endpoint is eligible. Allocates nothing.
///
/// `plain_at` is the router's epoch at which a scan last found every endpoint plainly
/// healthy; `epoch` is the router's epoch as read before `endpoints` was brought up to date,
/// `None` when the list may be older than the epoch (at `call`): then the pick neither takes
/// the no-scan path nor marks the epoch. `now` reads the clock: only a pick that has to look
/// at health, ejections or cool-downs calls it.
///
/// Only step 1 is inlined into the caller; the scan is a call of its own ([`scanning`]).
#[inline]
pub(crate) fn pick<E: AsRef<EndpointState>>(
    endpoints: &[E],
    cfg: &RouteConfig,
    plain_at: &AtomicU64,
    rng: &mut impl Rng,
    epoch: Option<u64>,
    avoid: Avoid<'_>,
    now: impl FnOnce() -> u64,
) -> Result<usize, NoHealthyEndpoint> {
    let n = endpoints.len();
    if n == 0 {
        return Err(NoHealthyEndpoint { retry_after: None });
    }
    // 1. Nothing changed since every endpoint was seen plainly healthy: no scan.
    if avoid.is_empty() && epoch.is_some_and(|e| plain_at.load(Ordering::Acquire) == e) {
        return Ok(two_choices(rng, n, |i| load(endpoints, i)));
    }
    scanning(endpoints, cfg, plain_at, rng, epoch, avoid, now())
}

/// Endpoint `i`'s calls in flight: the load power of two choices compares.
#[inline]
fn load<E: AsRef<EndpointState>>(endpoints: &[E], i: usize) -> u32 {
    endpoints[i].as_ref().in_flight.load(Ordering::Relaxed)
}

/// Steps 2 to 6 of [`pick`], at `now`; `endpoints` is not empty.
fn scanning<E: AsRef<EndpointState>>(
    endpoints: &[E],
    cfg: &RouteConfig,
    plain_at: &AtomicU64,
    rng: &mut impl Rng,
    epoch: Option<u64>,
    avoid: Avoid<'_>,
    now: u64,
) -> Result<usize, NoHealthyEndpoint> {
    let n = endpoints.len();
    let load = |i: usize| load(endpoints, i);
    // 2. Consecutive-failure ejections.
    eject_due(endpoints, cfg, now);
    // 3. The scan.
    let mut cache = [Slot::default(); CACHED];
    let scan = Scan::new(&mut cache, endpoints, cfg, now);
    if scan.uniform {
        if let Some(epoch) = epoch {
            // If nothing happened during the scan, later picks can skip it.
            plain_at.store(epoch, Ordering::Release);
        }
        if avoid.is_empty() {
            return Ok(two_choices(rng, n, load));
        }
    }
    let get = |i: usize| scan.slot(endpoints, cfg, i, now);
    // 4. Panic mode.
    let panic = panicking(cfg, n, get, &scan);
    if panic.any() {
        tracing::debug!(
            available = scan.available,
            endpoints = n,
            "panic mode: ignoring health"
        );
    }
    let panic = |s: Slot| panic.contains(s.tier);
    // 5. The tier; failing that, the endpoints that cool down, as a last resort.
    let mut resort = false;
    let health = |s| weight(s, false);
    let tier = match choose_tier(
        n,
        get,
        |s| weight(s, panic(s)),
        health,
        cfg.overprovisioning,
        rng,
    ) {
        Some(tier) => tier,
        None => {
            let cooled = |s| last_resort(s, panic(s));
            let cooled_health = |s| last_resort(s, false);
            match choose_tier(n, get, cooled, cooled_health, cfg.overprovisioning, rng) {
                Some(tier) => {
                    tracing::debug!(
                        endpoints = n,
                        "every eligible endpoint cools down: last resort"
                    );
                    resort = true;
                    tier
                }
                None => {
                    return Err(NoHealthyEndpoint {
                        retry_after: retry_after(n, get, now),
                    });
                }
            }
        }
    };
    let weigh = |i: usize| {
        let s = get(i);
        if resort {
            last_resort(s, panic(s))
        } else {
            weight(s, panic(s))
        }
    };
    let token = |i: usize| endpoints[i].as_ref().token;
    let eligible = |i: usize| weigh(i) > 0.0;
    let avoid = avoid.within(n, eligible, token);
    let tier = retry_tier(n, tier, |i| get(i).tier, eligible, token, avoid);
    // 6. Two weighted draws in the tier, the less loaded wins.
    let candidate = |i: usize| get(i).tier == tier && eligible(i);
    let skip = skip(n, candidate, token, avoid);
    let draws = Draws::new(
        n,
        |i| candidate(i) && !(skip && avoid.contains(i, token(i))),
        weigh,
    );
    let a = draws.draw(rng);
    let b = draws.draw(rng);
    Ok(less_loaded(a, b, load))
}

/// Whether a pick at `now` could give the call to endpoint `i`, by the pick's own rules but
/// without its draws: `i` has weight ([`weight`]: panic mode included) or, when no endpoint
/// has any, weight as a [`last_resort`]; and it is not the endpoint with token `avoid` while
/// another endpoint is eligible ([`Avoid::within`]). Ejects what is due first, as a pick does.
/// Allocates nothing.
///
/// What a router asks of an endpoint it picked earlier, before it keeps waiting for it or keeps
/// a reservation on it. Not the endpoint's own weight alone: a pick sends calls where health
/// gives none (to endpoints cooling down when every one does, to held-out ones in panic mode),
/// and a router that gave such an endpoint up at each `poll_ready`, only to pick it again with
/// a fresh service, would lose its place in the endpoint's queue every time: two clones
/// waiting on one endpoint at its concurrency limit would hand its permit to each other for
/// good.
pub(crate) fn pickable<E: AsRef<EndpointState>>(
    endpoints: &[E],
    cfg: &RouteConfig,
    i: usize,
    avoid: Option<u64>,
    now: u64,
) -> bool {
    let n = endpoints.len();
    eject_due(endpoints, cfg, now);
    let mut cache = [Slot::default(); CACHED];
    let scan = Scan::new(&mut cache, endpoints, cfg, now);
    let get = |j: usize| scan.slot(endpoints, cfg, j, now);
    let panic = panicking(cfg, n, get, &scan);
    let panic = |s: Slot| panic.contains(s.tier);
    // As in `scanning`: the last resort only when no tier has weight.
    let resort = !(0..n).any(|j| weight(get(j), panic(get(j))) > 0.0);
    let eligible = |j: usize| {
        let s = get(j);
        if resort {
            last_resort(s, panic(s)) > 0.0
        } else {
            weight(s, panic(s)) > 0.0
        }
    };
    let token = |j: usize| endpoints[j].as_ref().token;
    eligible(i)
        && !Avoid::token(avoid)
            .within(n, eligible, token)
            .contains(i, token(i))
}

#[cfg(test)]
#[cfg(not(palisade_loom))]
mod tests {
    use std::sync::Arc;

    use palisade_core::{Category, Class};
    use rand::SeedableRng;
    use rand::rngs::SmallRng;
    use tokio::time::Instant;

    use super::*;
    use crate::health::Health;

    fn state(tier: u8) -> Arc<EndpointState> {
        Arc::new(EndpointState::new(
            tier,
            format!("tier {tier}"),
            Health::HEALTHY,
            crate::endpoint::live(RouteConfig::default()),
            Instant::now(),
            Arc::new(AtomicU64::new(0)),
        ))
    }

    fn fail(s: &EndpointState, times: u32, now: u64) {
        for _ in 0..times {
            s.on_failure(
                Class::new(Category::ServerError),
                &RouteConfig::default(),
                now,
            );
        }
    }

    fn rng() -> SmallRng {
        SmallRng::seed_from_u64(7)
    }

    fn slot(weight: f64, tier: u8) -> Slot {
        Slot {
            weight,
            counted: weight,
            tier,
            ..Slot::default()
        }
    }

    #[test]
    fn a_new_endpoint_in_slow_start_counts_in_full_unless_it_is_out() {
        let cfg = RouteConfig::default();
        let s = EndpointState::new(
            0,
            "new".to_owned(),
            Health::ramping(0),
            crate::endpoint::live(RouteConfig::default()),
            Instant::now(),
            Arc::new(AtomicU64::new(0)),
        );
        let slot = look(&s, &cfg, 0);
        assert_eq!((slot.weight, slot.counted), (0.2, 1.0));
        // Cooling down after a rate limit (no strike: still in slow start): no weight, and
        // still healthy capacity, in full.
        let mut limited = Class::new(Category::RateLimited);
        limited.retry_after = Some(Duration::from_millis(2));
        s.on_failure(limited, &cfg, 0);
        let slot = look(&s, &cfg, 1);
        assert_eq!((slot.cooling, slot.weight, slot.counted), (true, 0.0, 1.0));
        assert!(s.starting(s.health()));
        // Ejected: nothing, in slow start or not.
        s.eject(&cfg, 0);
        let slot = look(&s, &cfg, 1);
        assert_eq!((slot.weight, slot.counted), (0.0, 0.0));
        // Back from the ejection (a strike): its ramp counts by its share.
        let slot = look(&s, &cfg, 30_000);
        assert!(slot.weight > 0.0 && slot.weight < 1.0, "{slot:?}");
        assert_eq!(slot.counted, slot.weight);
        // An endpoint added healthy never counts more than its weight.
        let old = state(0);
        fail(&old, 5, 0);
        let slot = look(&old, &cfg, 30_000);
        assert_eq!(slot.counted, slot.weight, "{slot:?}");
    }

    #[test]
    fn a_new_endpoint_with_no_share_yet_is_no_capacity() {
        // A linear slow start from 0 %: at its very start it has no share, so it is neither
        // weighted nor counted (not available); a millisecond later it counts in full.
        let mut cfg = RouteConfig::default();
        cfg.health.ramp = crate::Ramp::Linear {
            window: Duration::from_secs(10),
            min_ratio: 0.0,
            aggression: 1.0,
        };
        let s = EndpointState::new(
            0,
            "new".to_owned(),
            Health::ramping(0),
            crate::endpoint::live(cfg),
            Instant::now(),
            Arc::new(AtomicU64::new(0)),
        );
        assert!(s.starting(s.health()));
        let slot = look(&s, &cfg, 0);
        assert_eq!((slot.weight, slot.counted), (0.0, 0.0));
        let slot = look(&s, &cfg, 1);
        assert!(slot.weight > 0.0 && slot.counted == 1.0, "{slot:?}");
    }

    #[test]
    fn look_reads_health_ejection_and_cool_down() {
        let cfg = RouteConfig::default();
        let s = state(2);
        let healthy = Slot {
            weight: 1.0,
            counted: 1.0,
            tier: 2,
            cooling: false,
            cooled: 0.0,
            back: 0,
        };
        assert_eq!(look(&s, &cfg, 0), healthy);
        s.eject(&cfg, 0);
        let ejected = look(&s, &cfg, 29_999);
        assert_eq!(
            (ejected.weight, ejected.back, ejected.cooling),
            (0.0, 30_000, false)
        );
        assert_eq!(look(&s, &cfg, 30_000), healthy);

        let s = state(0);
        let mut limited = Class::new(Category::RateLimited);
        limited.retry_after = Some(Duration::from_secs(2));
        s.on_failure(limited, &cfg, 0);
        let cooling = look(&s, &cfg, 1_999);
        assert_eq!(
            (
                cooling.weight,
                cooling.back,
                cooling.cooling,
                cooling.cooled
            ),
            (0.0, 2_000, true, 1.0)
        );
        assert_eq!(cooling.counted, 1.0, "healthy capacity while it cools down");
        // Cooling down and degraded: its share counts; ejected as well: nothing.
        fail(&s, 3, 0);
        assert_eq!(look(&s, &cfg, 1_999).counted, 0.5);
        s.eject(&cfg, 0);
        assert_eq!(look(&s, &cfg, 1_999).counted, 0.0);
        let s = state(0);
        s.on_failure(limited, &cfg, 0);
        assert_eq!(look(&s, &cfg, 2_000).weight, 1.0);
        assert!(!look(&s, &cfg, 2_000).cooling);

        // Degraded: half its share.
        let s = state(0);
        fail(&s, 3, 0);
        assert_eq!(look(&s, &cfg, 0).weight, 0.5);
        // Failed, without active checks: held out, then on trial at the ramp's first step.
        fail(&s, 7, 0);
        let held = look(&s, &cfg, 29_999);
        assert_eq!((held.weight, held.back), (0.0, 30_000));
        assert_eq!(look(&s, &cfg, 30_000).weight, 0.2);
        assert_eq!(look(&s, &cfg, 30_000).back, 0);
        // Under active checks nothing comes back by itself: the checks decide.
        let s = state(0);
        for _ in 0..10 {
            s.on_check(false, &cfg, 0, 1_000);
        }
        let failed = look(&s, &cfg, 30_000);
        assert_eq!((failed.weight, failed.back), (0.0, 0));
    }

    #[test]
    fn eject_due_ejects_at_the_threshold_within_the_cap() {
        let mut cfg = RouteConfig::default();
        let eps = [state(0), state(0), state(0)];
        fail(&eps[1], 4, 0);
        eject_due(&eps, &cfg, 0);
        assert_eq!(
            eps[1].ejected_until(),
            0,
            "4 failures are below the threshold"
        );
        fail(&eps[1], 1, 0);
        eject_due(&eps, &cfg, 0);
        assert_eq!(eps[1].ejected_until(), 30_000);
        assert_eq!(eps[1].consecutive_failures(), 0);
        // Failures of calls in flight while ejected eject nothing more.
        fail(&eps[1], 5, 10);
        eject_due(&eps, &cfg, 10);
        assert_eq!((eps[1].ejected_until(), eps[1].ejections()), (30_000, 1));
        // One of three is the cap (a tenth, but always one): the others stay.
        fail(&eps[0], 5, 10);
        fail(&eps[2], 5, 10);
        eject_due(&eps, &cfg, 10);
        assert_eq!(eps[0].ejected_until() + eps[2].ejected_until(), 0);
        // With room for all, they go in order.
        cfg.outlier.max_ejection_ratio = 1.0;
        eject_due(&eps, &cfg, 10);
        assert_eq!(eps[0].ejected_until(), 30_010);
        assert_eq!(eps[2].ejected_until(), 30_010);
        // Room for two: the first due of them only.
        let eps = [state(0), state(0), state(0)];
        cfg.outlier.max_ejection_ratio = 0.67;
        fail(&eps[1], 5, 0);
        fail(&eps[2], 5, 0);
        fail(&eps[0], 5, 0);
        eject_due(&eps, &cfg, 0);
        let out = eps
            .iter()
            .map(|s| s.ejected_until() > 0)
            .collect::<Vec<_>>();
        assert_eq!(out, [true, true, false]);
        // The rule off: nothing is ejected.
        cfg.outlier.consecutive_failures = None;
        let s = [state(0)];
        fail(&s[0], 50, 0);
        eject_due(&s, &cfg, 0);
        assert_eq!(s[0].ejected_until(), 0);
    }

    #[test]
    fn a_scan_counts_the_available_and_sees_plain_health() {
        let cfg = RouteConfig::default();
        let mut cache = [Slot::default(); CACHED];
        let eps = [state(0), state(0), state(0)];
        let scan = Scan::new(&mut cache, &eps, &cfg, 0);
        assert_eq!((scan.available, scan.uniform), (3, true));
        fail(&eps[1], 3, 0);
        let scan = Scan::new(&mut cache, &eps, &cfg, 0);
        assert_eq!((scan.available, scan.uniform), (3, false), "one degraded");
        assert_eq!(scan.slot(&eps, &cfg, 1, 0).weight, 0.5);
        assert_eq!(scan.capacity, 2.5);
        eps[2].eject(&cfg, 0);
        let scan = Scan::new(&mut cache, &eps, &cfg, 0);
        assert_eq!((scan.available, scan.capacity), (2, 1.5));
        let tiers = [state(0), state(1)];
        let scan = Scan::new(&mut cache, &tiers, &cfg, 0);
        assert_eq!((scan.available, scan.uniform), (2, false), "two tiers");
        // Beyond the cache, slots are looked at again.
        let many: Vec<_> = (0..CACHED + 6).map(|_| state(0)).collect();
        many[CACHED + 5].eject(&cfg, 0);
        many[3].eject(&cfg, 0);
        let scan = Scan::new(&mut cache, &many, &cfg, 0);
        assert_eq!((scan.available, scan.uniform), (CACHED + 4, false));
        for i in [3, CACHED - 1, CACHED, CACHED + 5] {
            assert_eq!(scan.slot(&many, &cfg, i, 0), look(&many[i], &cfg, 0));
        }
        assert_eq!(scan.slot(&many, &cfg, CACHED + 5, 0).weight, 0.0);
        assert_eq!(scan.slot(&many, &cfg, 3, 0).weight, 0.0);
    }

    #[test]
    fn panic_mode_starts_below_the_ratio() {
        let mut cfg = RouteConfig::default();
        assert!(panics(&cfg, 1.0, 3));
        assert!(!panics(&cfg, 2.0, 3));
        assert!(!panics(&cfg, 2.0, 4), "exactly half is not below half");
        assert!(panics(&cfg, 0.0, 1));
        // By weight: one endpoint at full share and one on trial at a fifth of it is less
        // than half of three endpoints' traffic; so is one of two at a fifth.
        assert!(panics(&cfg, 1.2, 3));
        assert!(panics(&cfg, 0.2, 2));
        assert!(!panics(&cfg, 1.5, 3));
        cfg.panic_ratio = None;
        assert!(!panics(&cfg, 0.0, 3));
    }

    /// The tiers that panic over `slots`, under the defaults.
    fn panicking_of(slots: &[Slot]) -> Vec<u8> {
        let cfg = RouteConfig::default();
        let mut cache = [Slot::default(); CACHED];
        let eps: Vec<_> = slots.iter().map(|s| state(s.tier)).collect();
        let mut scan = Scan::new(&mut cache, &eps, &cfg, 0);
        // The scan's counts, of the given slots rather than of the states.
        scan.available = slots.iter().filter(|s| s.counted > 0.0).count();
        scan.capacity = slots.iter().map(|s| s.counted).sum();
        let set = panicking(&cfg, slots.len(), |i| slots[i], &scan);
        (0..=u8::MAX).filter(|t| set.contains(*t)).collect()
    }

    #[test]
    fn an_endpoint_cooling_down_is_healthy_capacity_for_panic_mode() {
        let cfg = RouteConfig::default();
        let plain_at = AtomicU64::new(u64::MAX);
        let mut rng = rng();
        let mut cache = [Slot::default(); CACHED];
        // a ejected, b cooling down after a rate limit, c healthy: two thirds of the
        // endpoints' traffic is healthy, no panic; the calls go to c alone.
        let eps = [state(0), state(0), state(0)];
        eps[0].eject(&cfg, 0);
        let mut limited = Class::new(Category::RateLimited);
        limited.retry_after = Some(Duration::from_secs(60));
        eps[1].on_failure(limited, &cfg, 0);
        let scan = Scan::new(&mut cache, &eps, &cfg, 0);
        assert_eq!((scan.available, scan.capacity), (2, 2.0));
        let get = |i: usize| scan.slot(&eps, &cfg, i, 0);
        assert!(!panicking(&cfg, 3, get, &scan).any());
        for _ in 0..200 {
            assert_eq!(
                pick(&eps, &cfg, &plain_at, &mut rng, None, Avoid::NONE, || 0),
                Ok(2)
            );
        }
        // Tiers: a primary ejected and one cooling down, a healthy standby. The primaries'
        // tier is at half its health (70 % with overprovisioning) and the standby adds the
        // rest: no tier panics, and the calls go to the standby, never to the ejected primary.
        let eps = [state(0), state(0), state(1)];
        eps[0].eject(&cfg, 0);
        eps[1].on_failure(limited, &cfg, 0);
        let scan = Scan::new(&mut cache, &eps, &cfg, 0);
        let get = |i: usize| scan.slot(&eps, &cfg, i, 0);
        assert!(!panicking(&cfg, 3, get, &scan).any());
        for _ in 0..200 {
            assert_eq!(
                pick(&eps, &cfg, &plain_at, &mut rng, None, Avoid::NONE, || 0),
                Ok(2)
            );
        }
        // A standby ejected as well: the one cooling down is still healthy capacity, so the
        // empty standby tier does not panic (no total panic), and the primary cooling down
        // takes the calls as the last resort rather than an ejected endpoint.
        eps[2].eject(&cfg, 0);
        let scan = Scan::new(&mut cache, &eps, &cfg, 0);
        let get = |i: usize| scan.slot(&eps, &cfg, i, 0);
        assert!(!panicking(&cfg, 3, get, &scan).any());
        for _ in 0..200 {
            assert_eq!(
                pick(&eps, &cfg, &plain_at, &mut rng, None, Avoid::NONE, || 0),
                Ok(1)
            );
        }
    }

    #[test]
    fn a_tier_panics_only_when_the_tiers_together_lack_healthy_capacity() {
        // One tier: below half its traffic, it panics.
        assert_eq!(
            panicking_of(&[slot(1.0, 0), slot(0.0, 0), slot(0.0, 0)]),
            [0]
        );
        assert_eq!(
            panicking_of(&[slot(1.0, 3), slot(1.0, 3), slot(0.0, 3)]),
            []
        );
        assert_eq!(panicking_of(&[slot(0.0, 200), slot(0.0, 200)]), [200]);
        // Two dead primaries and a healthy standby: the standby takes it all, no panic.
        assert_eq!(
            panicking_of(&[slot(0.0, 0), slot(0.0, 0), slot(1.0, 1)]),
            []
        );
        // A quarter of tier 0 (35 % with overprovisioning) and a degraded standby (70 %):
        // enough together, no panic.
        let slots = [slot(1.0, 0), slot(0.0, 0), slot(0.0, 0), slot(0.0, 0)];
        let mut with_standby = slots.to_vec();
        with_standby.push(slot(0.5, 1));
        assert_eq!(panicking_of(&with_standby), []);
        // Not enough together (7 % and 70 %): the tier below its ratio panics, the other,
        // at half its traffic, does not.
        let slots = [slot(0.2, 0), slot(0.0, 0), slot(0.0, 0), slot(0.0, 0)];
        let mut short = slots.to_vec();
        short.extend([slot(0.5, 1), slot(0.5, 1)]);
        assert_eq!(panicking_of(&short), [0]);
        // A tier with no weight at all does not panic while another has some...
        let slots = [slot(0.0, 0), slot(0.0, 0), slot(0.2, 1), slot(0.0, 1)];
        assert_eq!(panicking_of(&slots), [1]);
        // ... and every tier panics when none has any.
        let slots = [slot(0.0, 0), slot(0.0, 0), slot(0.0, 1), slot(0.0, 7)];
        assert_eq!(panicking_of(&slots), [0, 1, 7]);
        // Above 64 and in the last word of the set.
        let slots = [slot(0.0, 64), slot(0.0, 255)];
        assert_eq!(panicking_of(&slots), [64, 255]);
    }

    #[test]
    fn weights_ignore_health_in_panic_but_never_a_cool_down() {
        let degraded = slot(0.5, 0);
        assert_eq!(weight(degraded, false), 0.5);
        assert_eq!(weight(degraded, true), 1.0);
        assert_eq!(weight(slot(0.0, 0), true), 1.0);
        let cooling = Slot {
            cooling: true,
            ..slot(0.0, 0)
        };
        assert_eq!(weight(cooling, true), 0.0);
        assert_eq!(weight(cooling, false), 0.0);
    }

    /// How often each tier is chosen out of `runs` over `slots`.
    fn tier_counts(slots: &[Slot], runs: usize) -> [usize; 4] {
        let mut rng = rng();
        let mut counts = [0; 4];
        for _ in 0..runs {
            let tier = choose_tier(
                slots.len(),
                |i| slots[i],
                |s| s.weight,
                |s| s.weight,
                1.4,
                &mut rng,
            );
            counts[tier.map_or(3, usize::from)] += 1;
        }
        counts
    }

    #[test]
    fn the_lowest_tier_keeps_what_its_capacity_allows() {
        // Full capacity: tier 0, and no draw of the rng.
        let slots = [slot(1.0, 0), slot(1.0, 0), slot(1.0, 1)];
        let (mut a, mut b) = (rng(), rng());
        assert_eq!(
            choose_tier(3, |i| slots[i], |s| s.weight, |s| s.weight, 1.4, &mut a),
            Some(0)
        );
        assert_eq!(a.random::<u64>(), b.random::<u64>());
        // 0.75 healthy × 1.4 ≥ 1: still all of it.
        let slots = [slot(1.0, 0), slot(0.5, 0), slot(1.0, 1)];
        assert_eq!(tier_counts(&slots, 1000), [1000, 0, 0, 0]);
        // Half healthy: 0.5 × 1.4 = 70 % stays, 30 % spills to tier 1.
        let slots = [slot(1.0, 0), slot(0.0, 0), slot(1.0, 1)];
        let [zero, one, ..] = tier_counts(&slots, 10_000);
        assert!((6_700..7_300).contains(&zero), "{zero}");
        assert_eq!(zero + one, 10_000);
        // Below a whole together, each tier takes its share of their sum: a quarter healthy in
        // tier 0 (0.35 with overprovisioning) and a tenth in tier 1 (0.14) share 5 to 2.
        let mut slots = vec![slot(1.0, 0), slot(0.0, 0), slot(0.0, 0), slot(0.0, 0)];
        slots.push(slot(1.0, 1));
        slots.extend((0..9).map(|_| slot(0.0, 1)));
        let [zero, one, ..] = tier_counts(&slots, 10_000);
        assert!((6_900..7_400).contains(&zero), "{zero}");
        assert_eq!(zero + one, 10_000);
        // Spilled past the last tier with weight: it stays on that one.
        let slots = [slot(1.0, 0), slot(0.0, 0), slot(0.0, 1)];
        assert_eq!(tier_counts(&slots, 1000), [1000, 0, 0, 0]);
        // A tier without weight passes everything on; tiers need not start at 0 nor be in order.
        let slots = [slot(1.0, 2), slot(0.0, 1), slot(1.0, 5)];
        assert_eq!(tier_counts(&slots, 1000), [0, 0, 1000, 0]);
        // No weight anywhere: no tier.
        let slots = [slot(0.0, 0), slot(0.0, 1)];
        assert_eq!(tier_counts(&slots, 10), [0, 0, 0, 10]);
    }

    #[test]
    fn retry_after_is_the_soonest_return() {
        let back = |b: u64| Slot {
            back: b,
            ..Slot::default()
        };
        let slots = [back(0), back(5_000), back(3_000), back(1_000)];
        assert_eq!(
            retry_after(4, |i| slots[i], 1_000),
            Some(Duration::from_millis(2_000))
        );
        assert_eq!(retry_after(1, |i| slots[i], 1_000), None);
    }

    #[test]
    fn a_retry_skips_the_failed_endpoint_unless_it_is_the_only_one() {
        let token = |i: usize| 10 + i as u64;
        let all = |_: usize| true;
        let avoid = Avoid::token(Some(11));
        assert!(!skip(3, all, token, Avoid::NONE));
        assert!(skip(3, all, token, avoid));
        assert!(!skip(3, |i| i == 1, token, avoid), "the only one");
        assert!(skip(3, |i| i == 2, token, avoid));
        assert!(!skip(3, |_| false, token, avoid));
    }

    #[test]
    fn what_to_avoid_covers_a_token_and_positions_whose_readiness_failed() {
        assert!(Avoid::NONE.is_empty() && Avoid::token(None).is_empty());
        let retry = Avoid::token(Some(11));
        assert!(!retry.is_empty());
        assert!(retry.contains(5, 11) && !retry.contains(1, 10));
        // Positions 1, 64 and 129: a bit each, in the word of each.
        let words = [1 << 1, 1, 1 << 1];
        let unready = Avoid {
            token: None,
            not_ready: &words,
        };
        assert!(!unready.is_empty());
        let marked = (0..200)
            .filter(|&i| unready.contains(i, 0))
            .collect::<Vec<_>>();
        assert_eq!(marked, [1, 64, 129]);
        // No words, no positions: nothing (a pass in which no readiness failed).
        let clear = Avoid {
            token: None,
            not_ready: &[],
        };
        assert!(clear.is_empty() && !clear.contains(0, 0));
    }

    #[test]
    fn what_a_pick_avoids_gives_way_so_that_an_eligible_endpoint_is_left() {
        let token = |i: usize| 10 + i as u64;
        let all = |_: usize| true;
        // Endpoints 0 and 1 failed their readiness, the retry avoids 2.
        let words = [0b011];
        let both = Avoid {
            token: Some(12),
            not_ready: &words,
        };
        // Endpoint 3 is left: everything is avoided.
        assert_eq!(both.within(4, all, token), both);
        // Only the three: back to the retry's failed endpoint, not to an unready one.
        let unready = Avoid {
            token: None,
            not_ready: &words,
        };
        assert_eq!(both.within(3, all, token), unready);
        assert!(!both.within(3, all, token).contains(2, 12));
        // Only the unready ones eligible: nothing is avoided.
        assert_eq!(both.within(3, |i| i < 2, token), Avoid::NONE);
        assert_eq!(unready.within(2, all, token), Avoid::NONE);
        // A retry's failed endpoint alone: avoided while another is eligible.
        let retry = Avoid::token(Some(11));
        assert_eq!(retry.within(3, all, token), retry);
        assert_eq!(retry.within(3, |i| i == 1, token), Avoid::NONE);
        assert_eq!(Avoid::NONE.within(3, all, token), Avoid::NONE);
    }

    #[test]
    fn a_retry_leaves_a_tier_whose_only_eligible_endpoint_failed_it() {
        let token = |i: usize| 10 + i as u64;
        let all = |_: usize| true;
        let retry = |i: usize| Avoid::token(Some(token(i)));
        let tiers = |t: &'static [u8]| move |i: usize| t[i];
        // A single primary and a standby: the primary's retry goes to the standby.
        let one = tiers(&[0, 1]);
        assert_eq!(retry_tier(2, 0, one, all, token, retry(0)), 1);
        // Nothing to avoid, or another endpoint failed: the chosen tier.
        assert_eq!(retry_tier(2, 0, one, all, token, Avoid::NONE), 0);
        assert_eq!(retry_tier(2, 0, one, all, token, retry(1)), 0);
        assert_eq!(retry_tier(2, 0, one, all, token, Avoid::token(Some(99))), 0);
        // Two primaries: the other primary takes it, in the chosen tier.
        let two = tiers(&[0, 0, 1]);
        assert_eq!(retry_tier(3, 0, two, all, token, retry(0)), 0);
        // ... unless the other primary is not eligible.
        assert_eq!(retry_tier(3, 0, two, |i| i != 1, token, retry(0)), 1);
        // No other eligible endpoint anywhere: back to the chosen tier (and the failed one).
        assert_eq!(retry_tier(2, 0, one, |i| i == 0, token, retry(0)), 0);
        assert_eq!(retry_tier(1, 0, |_| 0, all, token, retry(0)), 0);
        // The lowest other tier with an eligible endpoint; tiers need not be in order.
        let spread = tiers(&[0, 5, 3, 2]);
        assert_eq!(retry_tier(4, 0, spread, all, token, retry(0)), 2);
        assert_eq!(retry_tier(4, 0, spread, |i| i != 3, token, retry(0)), 3);
        // A call spilled to a standby whose only endpoint failed it goes back down.
        assert_eq!(retry_tier(3, 1, two, all, token, retry(2)), 0);
        // Endpoints whose readiness failed move the pick alike.
        let words = [0b1];
        let unready = Avoid {
            token: None,
            not_ready: &words,
        };
        assert_eq!(retry_tier(2, 0, one, all, token, unready), 1);
        assert_eq!(retry_tier(3, 0, two, all, token, unready), 0);
        let words = [0b11];
        let unready = Avoid {
            token: None,
            not_ready: &words,
        };
        assert_eq!(retry_tier(3, 0, two, all, token, unready), 1);
    }

    #[test]
    fn pickable_gives_the_last_resort_to_the_endpoints_cooling_down_only() {
        // Panic mode off: the ejected endpoint gets no weight from it.
        let cfg = RouteConfig {
            panic_ratio: None,
            ..RouteConfig::default()
        };
        let eps = [state(0), state(0)];
        // a cools down after a rate limit, b is ejected: no endpoint has weight, so a takes
        // the call as the last resort, and b, out and not cooling down, does not.
        eps[0].on_failure(Class::new(Category::RateLimited), &cfg, 0);
        eps[1].eject(&cfg, 0);
        assert!(pickable(&eps, &cfg, 0, None, 0));
        assert!(!pickable(&eps, &cfg, 1, None, 0));
        // A retry avoiding a goes back to it: b is no other endpoint to go to.
        assert!(pickable(&eps, &cfg, 0, Some(eps[0].token), 0));
        // Once a's cool-down is over it has weight again; b is still out.
        assert!(pickable(&eps, &cfg, 0, None, 1_000));
        assert!(!pickable(&eps, &cfg, 1, None, 1_000));
    }

    #[test]
    fn draws_follow_the_weights_of_the_eligible() {
        let weights = [0.5, 1.0, 4.0, 2.0];
        let draws = Draws::new(4, |i| i != 2, |i| weights[i]);
        assert_eq!(draws.total, 3.5);
        let mut rng = rng();
        let mut counts = [0; 4];
        for _ in 0..35_000 {
            counts[draws.draw(&mut rng)] += 1;
        }
        assert_eq!(counts[2], 0, "not eligible");
        assert!((4_500..5_500).contains(&counts[0]), "{counts:?}");
        assert!((9_300..10_700).contains(&counts[1]), "{counts:?}");
        assert!((19_000..21_000).contains(&counts[3]), "{counts:?}");
        // A draw past the weights (rounding) lands on the last eligible endpoint.
        let past = Draws {
            total: 100.0,
            ..Draws::new(4, |i| i < 2, |i| weights[i])
        };
        let last = (0..100).filter(|_| past.draw(&mut rng) == 1).count();
        assert!(last > 90, "{last}");
    }

    #[test]
    fn the_less_loaded_of_two_wins_the_first_on_a_tie() {
        let loads = [3, 2, 3];
        let load = |i: usize| loads[i];
        assert_eq!(less_loaded(0, 1, load), 1);
        assert_eq!(less_loaded(1, 0, load), 1);
        assert_eq!(less_loaded(0, 2, load), 0);
        assert_eq!(less_loaded(2, 0, load), 2);
        // Two distinct uniform draws: the idle endpoint wins whenever it is one of the two,
        // in 2 picks of 3 (5 in 9 if the same endpoint could be drawn twice).
        let loads = [5, 0, 5];
        let mut rng = rng();
        let idle = (0..9_000)
            .filter(|_| two_choices(&mut rng, 3, |i| loads[i]) == 1)
            .count();
        assert!((5_700..6_300).contains(&idle), "{idle}");
        assert_eq!(two_choices(&mut rng, 1, |_| 0), 0);
    }

    #[test]
    fn of_two_plainly_healthy_endpoints_the_less_loaded_always_wins() {
        // Drawn with replacement, one pick in two would be blind (3 in 4 to the idle one).
        let mut rng = rng();
        for loads in [[1, 0], [0, 1], [7, 3]] {
            let less = if loads[0] < loads[1] { 0 } else { 1 };
            for _ in 0..1_000 {
                assert_eq!(two_choices(&mut rng, 2, |i| loads[i]), less, "{loads:?}");
            }
        }
        // Both endpoints still take calls when they tie.
        let first = (0..1_000)
            .filter(|_| two_choices(&mut rng, 2, |_| 4) == 0)
            .count();
        assert!((400..600).contains(&first), "{first}");
    }

    fn no_clock() -> u64 {
        panic!("the no-scan path reads no clock")
    }

    #[test]
    fn pick_runs_the_steps() {
        let cfg = RouteConfig::default();
        let plain_at = AtomicU64::new(u64::MAX);
        let mut rng = rng();
        let none: [Arc<EndpointState>; 0] = [];
        let err = pick(
            &none,
            &cfg,
            &plain_at,
            &mut rng,
            Some(0),
            Avoid::NONE,
            no_clock,
        );
        assert_eq!(err.unwrap_err().retry_after, None);

        let eps = [state(0), state(0), state(0)];
        // A scan of plainly healthy endpoints marks the epoch it was given, and only then.
        assert!(pick(&eps, &cfg, &plain_at, &mut rng, None, Avoid::NONE, || 0).is_ok());
        assert_eq!(plain_at.load(Ordering::Relaxed), u64::MAX);
        assert!(pick(&eps, &cfg, &plain_at, &mut rng, Some(4), Avoid::NONE, || 0).is_ok());
        assert_eq!(plain_at.load(Ordering::Relaxed), 4);
        // At that epoch, no scan and no clock; at another, a scan.
        for _ in 0..100 {
            assert!(
                pick(
                    &eps,
                    &cfg,
                    &plain_at,
                    &mut rng,
                    Some(4),
                    Avoid::NONE,
                    no_clock
                )
                .is_ok()
            );
        }
        let mut now_read = false;
        let _ = pick(
            &eps,
            &cfg,
            &plain_at,
            &mut rng,
            Some(5),
            Avoid::NONE,
            || {
                now_read = true;
                0
            },
        );
        assert!(now_read);
        // A retry avoids the endpoint that failed, plain health or not.
        let token = eps[1].token;
        for _ in 0..200 {
            let i = pick(
                &eps,
                &cfg,
                &plain_at,
                &mut rng,
                Some(5),
                Avoid::token(Some(token)),
                || 0,
            );
            assert_ne!(i.unwrap(), 1);
        }
        // Consecutive failures eject before the scan: the endpoint gets no pick.
        fail(&eps[2], 5, 0);
        for _ in 0..200 {
            assert_ne!(
                pick(&eps, &cfg, &plain_at, &mut rng, None, Avoid::NONE, || 0),
                Ok(2)
            );
        }
        assert_eq!(eps[2].ejected_until(), 30_000);
        // Two of three out: panic, all three get calls.
        eps[0].eject(&cfg, 0);
        let mut seen = [0; 3];
        for _ in 0..300 {
            seen[pick(&eps, &cfg, &plain_at, &mut rng, None, Avoid::NONE, || 0).unwrap()] += 1;
        }
        assert!(seen.iter().all(|n| *n > 50), "{seen:?}");
    }

    /// The endpoints that `runs` picks over `eps` land on, avoiding `avoid`, at `now`.
    fn landed<E: AsRef<EndpointState>>(
        eps: &[E],
        cfg: &RouteConfig,
        avoid: Avoid<'_>,
        now: u64,
        runs: usize,
    ) -> Vec<usize> {
        let plain_at = AtomicU64::new(u64::MAX);
        let mut rng = rng();
        let mut seen = vec![0; eps.len()];
        for _ in 0..runs {
            // With and without an epoch: through `pick` and straight through `scanning`.
            let i = pick(eps, cfg, &plain_at, &mut rng, Some(0), avoid, || now).unwrap();
            seen[i] += 1;
            let i = scanning(eps, cfg, &plain_at, &mut rng, None, avoid, now).unwrap();
            seen[i] += 1;
        }
        seen
    }

    #[test]
    fn a_retry_of_a_single_primary_goes_to_the_standby() {
        let cfg = RouteConfig::default();
        let retry = |e: &Arc<EndpointState>| Avoid::token(Some(e.token));
        // A single primary and a standby: first calls stay on the primary, its retries go to
        // the standby.
        let eps = [state(0), state(1)];
        assert_eq!(landed(&eps, &cfg, Avoid::NONE, 0, 200), [400, 0]);
        assert_eq!(landed(&eps, &cfg, retry(&eps[0]), 0, 200), [0, 400]);
        // Avoiding the standby (or an endpoint that is not there) changes nothing.
        assert_eq!(landed(&eps, &cfg, retry(&eps[1]), 0, 200), [400, 0]);
        assert_eq!(landed(&eps, &cfg, Avoid::token(Some(99)), 0, 200), [400, 0]);
        // Two primaries: the retry stays in the primary tier, on the other one.
        let eps = [state(0), state(0), state(1)];
        assert_eq!(landed(&eps, &cfg, retry(&eps[0]), 0, 200), [0, 400, 0]);
        // One primary degraded (half its share; the tier keeps 0.75 × 1.4 of the calls, all of
        // them): its retries go to the healthy one.
        fail(&eps[1], 3, 0);
        assert_eq!(landed(&eps, &cfg, retry(&eps[1]), 0, 200), [400, 0, 0]);
        // The other primary ejected: the standby.
        eps[0].eject(&cfg, 0);
        assert_eq!(landed(&eps, &cfg, retry(&eps[1]), 0, 200), [0, 0, 400]);
        // No other eligible endpoint anywhere (the standby ejected): back to the primary, a
        // retry on it beats none.
        let eps = [state(0), state(1)];
        eps[1].eject(&cfg, 0);
        assert_eq!(landed(&eps, &cfg, retry(&eps[0]), 0, 200), [400, 0]);
        // Nor one cooling down after a rate limit, while the primary has weight.
        let mut limited = Class::new(Category::RateLimited);
        limited.retry_after = Some(Duration::from_secs(60));
        let eps = [state(0), state(1)];
        eps[1].on_failure(limited, &cfg, 0);
        assert_eq!(landed(&eps, &cfg, retry(&eps[0]), 0, 200), [400, 0]);
        // Both cooling down (the last resort): the retry goes to the standby.
        eps[0].on_failure(limited, &cfg, 0);
        assert_eq!(landed(&eps, &cfg, Avoid::NONE, 0, 200), [400, 0]);
        assert_eq!(landed(&eps, &cfg, retry(&eps[0]), 0, 200), [0, 400]);
    }

    #[test]
    fn in_panic_mode_a_retry_of_a_single_primary_goes_to_the_standby() {
        let cfg = RouteConfig::default();
        let retry = |e: &Arc<EndpointState>| Avoid::token(Some(e.token));
        // Both ejected: no tier has weight, every tier panics and health is ignored; calls go
        // to the primary, its retries to the standby.
        let eps = [state(0), state(1)];
        eps[0].eject(&cfg, 0);
        eps[1].eject(&cfg, 0);
        let mut cache = [Slot::default(); CACHED];
        let scan = Scan::new(&mut cache, &eps, &cfg, 0);
        let get = |i: usize| scan.slot(&eps, &cfg, i, 0);
        assert!(panicking(&cfg, 2, get, &scan).contains(0));
        assert_eq!(landed(&eps, &cfg, Avoid::NONE, 0, 200), [400, 0]);
        assert_eq!(landed(&eps, &cfg, retry(&eps[0]), 0, 200), [0, 400]);
        // A panicking tier of two: the other primary.
        let eps = [state(0), state(0), state(1)];
        for e in &eps {
            e.eject(&cfg, 0);
        }
        assert_eq!(landed(&eps, &cfg, retry(&eps[0]), 0, 200), [0, 400, 0]);
    }

    /// Avoids the positions marked in `words` and the endpoint with token `token`.
    fn unready(words: &[u64], token: Option<u64>) -> Avoid<'_> {
        Avoid {
            token,
            not_ready: words,
        }
    }

    #[test]
    fn a_pick_again_after_readiness_failures_avoids_them_while_another_is_eligible() {
        let cfg = RouteConfig::default();
        // All three ejected: panic mode, every endpoint weighs alike.
        let eps = [state(0), state(0), state(0)];
        for e in &eps {
            e.eject(&cfg, 0);
        }
        assert_eq!(
            landed(&eps, &cfg, unready(&[0b011], None), 0, 200),
            [0, 0, 400]
        );
        assert_eq!(
            landed(&eps, &cfg, unready(&[0b101], None), 0, 200),
            [0, 400, 0]
        );
        // All three unready: any of them (a fresh clone of its service may be ready).
        let seen = landed(&eps, &cfg, unready(&[0b111], None), 0, 300);
        assert!(seen.iter().all(|n| *n > 100), "{seen:?}");
        // Two unready and a retry avoiding the third: the retry goes back to the third, whose
        // readiness did not fail, rather than to an unready one.
        let third = Some(eps[2].token);
        assert_eq!(
            landed(&eps, &cfg, unready(&[0b011], third), 0, 200),
            [0, 0, 400]
        );
        // One unready and a retry avoiding another: the one left.
        assert_eq!(
            landed(&eps, &cfg, unready(&[0b001], third), 0, 200),
            [0, 400, 0]
        );
        // Across tiers: a single primary whose readiness failed leaves the call to the
        // standby.
        let eps = [state(0), state(1)];
        assert_eq!(landed(&eps, &cfg, unready(&[0b01], None), 0, 200), [0, 400]);
    }

    #[test]
    fn picks_prefer_the_endpoint_with_fewer_calls_in_flight() {
        let cfg = RouteConfig::default();
        let plain_at = AtomicU64::new(u64::MAX);
        let mut rng = rng();
        let eps = [state(0), state(0), state(0)];
        eps[0].in_flight.fetch_add(5, Ordering::Relaxed);
        eps[2].in_flight.fetch_add(5, Ordering::Relaxed);
        // The idle one wins whenever it is one of the two choices: on the no-scan path two
        // distinct endpoints (2 in 3), on the scanning one two draws by weight, which may
        // repeat so that weight counts (5 in 9 with equal weights).
        for (epoch, avoid, expected) in [
            (Some(1), None, 5_700..6_300),
            (None, Some(u64::MAX), 4_700..5_300),
        ] {
            let idle = (0..9_000)
                .filter(|_| {
                    pick(
                        &eps,
                        &cfg,
                        &plain_at,
                        &mut rng,
                        epoch,
                        Avoid::token(avoid),
                        || 0,
                    ) == Ok(1)
                })
                .count();
            assert!(expected.contains(&idle), "{idle}");
        }
    }

    #[test]
    fn with_nothing_eligible_the_pick_says_when_to_come_back() {
        let mut cfg = RouteConfig {
            panic_ratio: None,
            ..RouteConfig::default()
        };
        let plain_at = AtomicU64::new(u64::MAX);
        let mut rng = rng();
        let eps = [state(0), state(1)];
        eps[0].eject(&cfg, 0);
        eps[1].eject(&cfg, 1_000);
        let err = pick(&eps, &cfg, &plain_at, &mut rng, None, Avoid::NONE, || 500);
        assert_eq!(
            err.unwrap_err().retry_after,
            Some(Duration::from_millis(29_500))
        );
        // The other tier is picked when the first has nothing.
        assert_eq!(
            pick(&eps, &cfg, &plain_at, &mut rng, None, Avoid::NONE, || {
                30_000
            }),
            Ok(0)
        );
        assert_eq!(
            pick(&eps, &cfg, &plain_at, &mut rng, None, Avoid::NONE, || {
                30_500
            }),
            Ok(0)
        );
        // Panic mode never sends to an endpoint cooling down: with two of three ejected,
        // health lets a third through, and the calls go to the ejected ones.
        cfg.panic_ratio = Some(0.5);
        let mut limited = Class::new(Category::RateLimited);
        limited.retry_after = Some(Duration::from_secs(60));
        let eps = [state(0), state(0), state(0)];
        eps[0].on_failure(limited, &cfg, 0);
        eps[1].eject(&cfg, 0);
        eps[2].eject(&cfg, 0);
        for _ in 0..100 {
            assert_ne!(
                pick(&eps, &cfg, &plain_at, &mut rng, None, Avoid::NONE, || 0),
                Ok(0)
            );
        }
        // With one of two ejected, the one cooling down is half of the endpoints' health: no
        // panic, and it takes the calls as the last resort, never the ejected one.
        let eps = [state(0), state(0)];
        eps[0].on_failure(limited, &cfg, 0);
        eps[1].eject(&cfg, 0);
        for _ in 0..100 {
            assert_eq!(
                pick(&eps, &cfg, &plain_at, &mut rng, None, Avoid::NONE, || 0),
                Ok(0)
            );
        }
    }

    #[test]
    fn the_last_resort_weighs_only_endpoints_cooling_down() {
        let cooling = |share| Slot {
            cooling: true,
            cooled: share,
            ..slot(0.0, 0)
        };
        assert_eq!(last_resort(cooling(0.5), false), 0.5);
        assert_eq!(last_resort(cooling(0.5), true), 1.0);
        assert_eq!(last_resort(cooling(0.0), false), 0.0, "ejected as well");
        assert_eq!(last_resort(slot(1.0, 0), false), 0.0);
        assert_eq!(last_resort(slot(1.0, 0), true), 0.0);
    }

    #[test]
    fn when_every_endpoint_cools_down_the_server_decides() {
        let mut cfg = RouteConfig {
            panic_ratio: None,
            ..RouteConfig::default()
        };
        let plain_at = AtomicU64::new(u64::MAX);
        let mut rng = rng();
        let mut limited = Class::new(Category::RateLimited);
        limited.retry_after = Some(Duration::from_secs(60));
        // Both cool down, one at half its share (degraded): picked by their shares.
        let eps = [state(0), state(0)];
        fail(&eps[1], 3, 0);
        for e in &eps {
            e.on_failure(limited, &cfg, 0);
        }
        let mut seen = [0; 2];
        for _ in 0..3_000 {
            seen[pick(&eps, &cfg, &plain_at, &mut rng, None, Avoid::NONE, || 0).unwrap()] += 1;
        }
        assert!((1_850..2_150).contains(&seen[0]), "{seen:?}");
        // In panic mode (health lets three quarters through, below a ratio of 1), alike.
        cfg.panic_ratio = Some(1.0);
        let mut seen = [0; 2];
        for _ in 0..3_000 {
            seen[pick(&eps, &cfg, &plain_at, &mut rng, None, Avoid::NONE, || 0).unwrap()] += 1;
        }
        assert!((1_350..1_650).contains(&seen[0]), "{seen:?}");
        // One cooling down, one ejected, no panic mode: the one the server only paced.
        cfg.panic_ratio = None;
        let eps = [state(0), state(0)];
        eps[0].eject(&cfg, 0);
        eps[1].on_failure(limited, &cfg, 0);
        for _ in 0..100 {
            assert_eq!(
                pick(&eps, &cfg, &plain_at, &mut rng, None, Avoid::NONE, || 0),
                Ok(1)
            );
        }
        // Cooling down and ejected at once: nothing to send to, and when to look again
        // (the first one's ejection ends first).
        eps[1].eject(&cfg, 0);
        let err = pick(&eps, &cfg, &plain_at, &mut rng, None, Avoid::NONE, || 0).unwrap_err();
        assert_eq!(err.retry_after, Some(Duration::from_secs(30)));
        // A retry still avoids the endpoint that refused it where another is cooling too.
        let eps = [state(0), state(0)];
        for e in &eps {
            e.on_failure(limited, &cfg, 0);
        }
        let token = eps[0].token;
        for _ in 0..100 {
            assert_eq!(
                pick(
                    &eps,
                    &cfg,
                    &plain_at,
                    &mut rng,
                    None,
                    Avoid::token(Some(token)),
                    || 0
                ),
                Ok(1)
            );
        }
    }
}
