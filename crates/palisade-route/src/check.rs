//! Active health checks: the [`HealthCheck`] trait, [`Suite`], and the checker future.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use palisade_classify::BoxError;
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

impl<K: Clone + Send + Sync + 'static> RouteHandle<K> {
    /// The checker: every `interval`, checks each endpoint (a check that takes longer than
    /// `interval` counts as unhealthy), feeds the verdicts to the health state machine, then
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
    /// interval).
    pub async fn check_once<C: HealthCheck<K>>(&self, check: &C, timeout: Duration) {
        let endpoints = self.endpoints();
        for (key, state) in &endpoints {
            let healthy = matches!(
                tokio::time::timeout(timeout, check.check(key)).await,
                Ok(Ok(()))
            );
            let now = ms_since(self.shared.origin, Instant::now());
            state.on_check(healthy, &self.shared.config, now, self.trend_bucket_ms());
            tracing::debug!(endpoint = %state.label, healthy, "health check");
        }
        self.evaluate_outliers(&endpoints);
    }

    /// Envoy's interval rules: failure ratio (Envoy's failure percentage), then success rate
    /// below mean − k·σ.
    fn evaluate_outliers(&self, endpoints: &[(K, Arc<EndpointState>)]) {
        let cfg = &self.shared.config;
        let now = ms_since(self.shared.origin, Instant::now());
        let n = endpoints.len();
        let max_ejected = cfg.outlier.max_ejected(n);
        let mut ejected = endpoints
            .iter()
            .filter(|(_, s)| s.ejected_until() > now)
            .count();
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
            if ejected < max_ejected && state.ejected_until() <= now {
                tracing::warn!(endpoint = %state.label, rule = why, "outlier detected");
                state.eject(cfg, now);
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
