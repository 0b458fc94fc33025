//! Active health checks: the [`HealthCheck`] trait, [`Suite`], and the checker future.

use std::fmt;
use std::future::Future;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::pin::Pin;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use palisade_core::BoxError;
use tokio::time::Instant;

use crate::RouteHandle;
use crate::endpoint::{EndpointState, ms_since};

/// The future a [`HealthCheck`] returns (checks run on an interval, not per call, so they may
/// box).
pub type CheckFuture<'a> = Pin<Box<dyn Future<Output = Result<(), BoxError>> + Send + 'a>>;

/// An active health check of one endpoint, identified by its discovery key.
pub trait HealthCheck<K>: Send + Sync {
    /// Checks the endpoint: `Ok` is healthy.
    fn check<'a>(&'a self, key: &'a K) -> CheckFuture<'a>;
}

/// A [`HealthCheck`] from a closure; see [`check_fn`].
#[derive(Clone, Copy)]
pub struct CheckFn<F>(F);

impl<F> fmt::Debug for CheckFn<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("CheckFn")
    }
}

/// Makes a [`HealthCheck`] from `f(&key) -> impl Future<Output = Result<(), BoxError>>`.
pub fn check_fn<F>(f: F) -> CheckFn<F> {
    CheckFn(f)
}

impl<K, F, Fut> HealthCheck<K> for CheckFn<F>
where
    F: Fn(&K) -> Fut + Send + Sync,
    Fut: Future<Output = Result<(), BoxError>> + Send + 'static,
{
    fn check<'a>(&'a self, key: &'a K) -> CheckFuture<'a> {
        Box::pin((self.0)(key))
    }
}

/// Several checks that must all pass (a health-check suite), run in order;
/// the first failure is the verdict.
pub struct Suite<K> {
    checks: Vec<Box<dyn HealthCheck<K>>>,
}

impl<K> fmt::Debug for Suite<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Suite")
            .field("checks", &self.checks.len())
            .finish()
    }
}

impl<K> Default for Suite<K> {
    fn default() -> Self {
        Suite { checks: Vec::new() }
    }
}

impl<K> Suite<K> {
    /// An empty suite (which passes).
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a check.
    pub fn with(mut self, check: impl HealthCheck<K> + 'static) -> Self {
        self.checks.push(Box::new(check));
        self
    }
}

impl<K: Sync> HealthCheck<K> for Suite<K> {
    fn check<'a>(&'a self, key: &'a K) -> CheckFuture<'a> {
        Box::pin(async move {
            for check in &self.checks {
                check.check(key).await?;
            }
            Ok(())
        })
    }
}

/// One endpoint's check: healthy when it answers `Ok` within `timeout`. A check that panics,
/// making its future or polling it, is unhealthy, and logged: a bug in one check must not end
/// the checker (a spawned task would die with it), since an endpoint that checks have judged
/// returns to traffic only through the checks.
async fn verdict<K, C: HealthCheck<K> + ?Sized>(
    check: &C,
    key: &K,
    timeout: Duration,
    label: &str,
) -> bool {
    let panicked = || {
        tracing::warn!(endpoint = %label, "health check panicked; counted as unhealthy");
        false
    };
    let Ok(future) = catch_unwind(AssertUnwindSafe(|| check.check(key))) else {
        return panicked();
    };
    let mut future = std::pin::pin!(tokio::time::timeout(timeout, future));
    std::future::poll_fn(
        |cx| match catch_unwind(AssertUnwindSafe(|| future.as_mut().poll(cx))) {
            Ok(Poll::Ready(result)) => Poll::Ready(matches!(result, Ok(Ok(())))),
            Ok(Poll::Pending) => Poll::Pending,
            Err(_) => Poll::Ready(panicked()),
        },
    )
    .await
}

impl<K: Clone + Send + Sync + 'static> RouteHandle<K> {
    /// The checker: every `interval`, checks each endpoint, all at once (a check that takes
    /// longer than `interval`, or panics, counts as unhealthy; see
    /// [`check_once`](Self::check_once)), feeds the verdicts to the health state machine, then
    /// judges the interval's passive outcomes for outlier ejection (failure percentage and
    /// success rate).
    ///
    /// Nothing is spawned: spawn the returned future where you like and keep its handle; it
    /// runs until dropped.
    pub fn health_checker<C>(
        &self,
        check: C,
        interval: Duration,
    ) -> impl Future<Output = ()> + Send + use<K, C>
    where
        C: HealthCheck<K> + 'static,
    {
        let handle = self.clone();
        async move {
            let interval = interval.max(Duration::from_millis(1));
            let mut ticks = tokio::time::interval(interval);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                ticks.tick().await;
                handle.check_once(&check, interval).await;
            }
        }
    }

    /// One round of the checker (what [`health_checker`](Self::health_checker) runs each
    /// interval): checks every endpoint at once, each verdict recorded as it comes, a check
    /// that takes longer than `timeout` or panics unhealthy; then judges the interval's
    /// outliers.
    ///
    /// The checks of a round run concurrently, so that a round takes at most `timeout` however
    /// many checks hang: checked one after another, every blackholed endpoint (what a network
    /// partition makes of them) would add a whole `timeout` to the round and stretch the
    /// interval at which every other endpoint is checked.
    pub async fn check_once<C: HealthCheck<K>>(&self, check: &C, timeout: Duration) {
        let endpoints = self.endpoints();
        let mut round: Vec<Option<Pin<Box<dyn Future<Output = ()> + Send + '_>>>> = endpoints
            .iter()
            .map(|(key, state)| {
                let one: Pin<Box<dyn Future<Output = ()> + Send + '_>> = Box::pin(async move {
                    let healthy = verdict(check, key, timeout, &state.label()).await;
                    let now = ms_since(self.shared.origin, Instant::now());
                    state.on_check(
                        healthy,
                        &self.shared.config.load(),
                        now,
                        self.trend_bucket_ms(),
                    );
                    tracing::debug!(endpoint = %state.label(), healthy, "health check");
                });
                Some(one)
            })
            .collect();
        std::future::poll_fn(|cx| {
            let mut done = true;
            for slot in &mut round {
                if let Some(one) = slot {
                    if one.as_mut().poll(cx).is_ready() {
                        *slot = None;
                    } else {
                        done = false;
                    }
                }
            }
            if done { Poll::Ready(()) } else { Poll::Pending }
        })
        .await;
        self.evaluate_outliers(&endpoints);
    }

    /// Envoy's interval rules: failure ratio (Envoy's failure percentage), then success rate
    /// below mean − k·σ.
    fn evaluate_outliers(&self, endpoints: &[(K, Arc<EndpointState>)]) {
        let cfg = &*self.shared.config.load();
        let now = ms_since(self.shared.origin, Instant::now());
        let n = endpoints.len();
        let max_ejected = cfg.outlier.max_ejected(n);
        let count = || endpoints.iter().filter(|(_, s)| s.ejected_at(now)).count();
        let mut ejected = count();
        let volumes: Vec<(u64, u64)> = endpoints.iter().map(|(_, s)| s.take_interval()).collect();
        let judged: Vec<usize> = (0..n)
            .filter(|&i| volumes[i].0 + volumes[i].1 >= cfg.outlier.request_volume)
            .collect();
        if judged.len() < cfg.outlier.min_hosts as usize {
            return;
        }
        let rate = |i: usize| volumes[i].0 as f64 / (volumes[i].0 + volumes[i].1) as f64;
        let failed = |i: usize| volumes[i].1 as f64 / (volumes[i].0 + volumes[i].1) as f64;
        let mut eject = |i: usize, why: &str| {
            let state = &endpoints[i].1;
            // Claimed, then counted again: a router ejecting on another thread meanwhile does
            // not take the ejections past the cap (see `EndpointState::try_eject`).
            if ejected < max_ejected && state.try_eject(cfg, now, || count() <= max_ejected) {
                tracing::warn!(endpoint = %state.label(), rule = why, "outlier detected");
                ejected += 1;
            }
        };
        if let Some(threshold) = cfg.outlier.failure_ratio {
            for &i in &judged {
                if failed(i) >= threshold {
                    eject(i, "failure_ratio");
                }
            }
        }
        if let Some(factor) = cfg.outlier.success_rate_stdev_factor {
            let mean = judged.iter().map(|&i| rate(i)).sum::<f64>() / judged.len() as f64;
            let var = judged
                .iter()
                .map(|&i| (rate(i) - mean).powi(2))
                .sum::<f64>()
                / judged.len() as f64;
            let floor = mean - factor * var.sqrt();
            for &i in &judged {
                if rate(i) < floor {
                    eject(i, "success_rate");
                }
            }
        }
    }
}

#[cfg(test)]
#[cfg(not(palisade_loom))]
mod tests {
    use palisade_core::{Category, Class};
    use tower::service_fn;

    use super::*;
    use crate::{Route, RouteConfig};

    /// The handle of a router over `n` endpoints with `f` applied to the defaults, each
    /// endpoint's rate rules fed by hand (the checker's interval counts).
    fn handle(n: usize, f: impl FnOnce(&mut RouteConfig)) -> RouteHandle<usize> {
        let mut cfg = RouteConfig::default();
        f(&mut cfg);
        let svc = service_fn(|_: ()| async { Ok::<_, BoxError>(()) });
        Route::builder((0..n).map(|_| svc))
            .config(cfg)
            .build()
            .unwrap()
            .handle()
    }

    /// Counts `ok` successes and `failed` failures in endpoint `i`'s interval.
    fn feed(handle: &RouteHandle<usize>, i: usize, ok: u64, failed: u64) {
        let endpoints = handle.endpoints();
        let (cfg, state) = (&*handle.shared.config.load(), &endpoints[i].1);
        for _ in 0..ok {
            state.on_success(0, || 0);
        }
        for _ in 0..failed {
            state.on_failure(Class::new(Category::ServerError), cfg, 0);
        }
    }

    fn judge(handle: &RouteHandle<usize>) -> Vec<bool> {
        handle.evaluate_outliers(&handle.endpoints());
        handle.status().iter().map(|s| s.ejected).collect()
    }

    /// Keeps the health machine and consecutive failures out of the way: only the rate rules.
    fn rates_only(c: &mut RouteConfig) {
        c.outlier.consecutive_failures = None;
        c.health.degraded_after = 255;
        c.health.failed_after = 255;
    }

    #[tokio::test(start_paused = true)]
    async fn the_rate_rules_eject_within_the_cap_counting_those_already_out() {
        // A cap of one in six (a fifth, rounded down).
        let h = handle(6, |c| {
            rates_only(c);
            c.outlier.max_ejection_ratio = 0.2;
        });
        tokio::time::advance(Duration::from_secs(1)).await;
        for i in 0..4 {
            feed(&h, i, 100, 0);
        }
        // Two endpoints fail 90 % of their calls: only the first is ejected.
        feed(&h, 4, 10, 90);
        feed(&h, 5, 10, 90);
        assert_eq!(judge(&h), [false, false, false, false, true, false]);
        // Next interval, the ejected one still counts toward the cap: the other stays.
        for i in 0..4 {
            feed(&h, i, 100, 0);
        }
        feed(&h, 4, 10, 90);
        feed(&h, 5, 10, 90);
        assert_eq!(judge(&h), [false, false, false, false, true, false]);
        // Once its ejection is over (30 s), the other one goes.
        tokio::time::advance(Duration::from_secs(30)).await;
        for i in 0..4 {
            feed(&h, i, 100, 0);
        }
        feed(&h, 5, 10, 90);
        assert_eq!(judge(&h), [false, false, false, false, false, true]);
    }

    #[tokio::test(start_paused = true)]
    async fn equal_success_rates_eject_no_one_whatever_the_volumes() {
        let h = handle(6, rates_only);
        // All at 100 %: no spread at all (σ = 0, the floor is the mean), and no one below it.
        for i in 0..6 {
            feed(&h, i, 100, 0);
        }
        assert_eq!(judge(&h), [false; 6]);
        // 95 % everywhere, over 1000 calls or over 100: the rates, not the counts, compare.
        for i in 0..5 {
            feed(&h, i, 950, 50);
        }
        feed(&h, 5, 95, 5);
        assert_eq!(judge(&h), [false; 6]);
        // One endpoint below mean − 1.9 σ is ejected.
        for i in 0..5 {
            feed(&h, i, 950, 50);
        }
        feed(&h, 5, 60, 40);
        assert_eq!(judge(&h), [false, false, false, false, false, true]);
    }

    #[tokio::test(start_paused = true)]
    async fn the_rate_rules_need_the_volume_and_the_hosts() {
        let h = handle(5, rates_only);
        // 99 calls are below the request volume (100): four judged hosts are too few.
        for i in 0..4 {
            feed(&h, i, 100, 0);
        }
        feed(&h, 4, 9, 90);
        assert_eq!(judge(&h), [false; 5]);
        for i in 0..4 {
            feed(&h, i, 100, 0);
        }
        feed(&h, 4, 10, 90);
        assert_eq!(judge(&h), [false, false, false, false, true]);
    }

    #[tokio::test(start_paused = true)]
    async fn each_rate_rule_can_be_turned_off() {
        // Failure ratio off, success rate on: a 90 % failure is still a success-rate outlier.
        let h = handle(6, |c| {
            rates_only(c);
            c.outlier.failure_ratio = None;
        });
        for i in 0..5 {
            feed(&h, i, 100, 0);
        }
        feed(&h, 5, 10, 90);
        assert_eq!(judge(&h), [false, false, false, false, false, true]);
        // Both off: nothing.
        let h = handle(6, |c| {
            rates_only(c);
            c.outlier.failure_ratio = None;
            c.outlier.success_rate_stdev_factor = None;
        });
        for i in 0..5 {
            feed(&h, i, 100, 0);
        }
        feed(&h, 5, 0, 100);
        assert_eq!(judge(&h), [false; 6]);
        // The failure ratio's threshold is inclusive: 85 of 100 failed is enough, 84 is not
        // (success rate off, so only it can act).
        let h = handle(5, |c| {
            rates_only(c);
            c.outlier.success_rate_stdev_factor = None;
            c.outlier.max_ejection_ratio = 1.0;
        });
        for i in 0..3 {
            feed(&h, i, 100, 0);
        }
        feed(&h, 3, 16, 84);
        feed(&h, 4, 15, 85);
        assert_eq!(judge(&h), [false, false, false, false, true]);
    }
}
