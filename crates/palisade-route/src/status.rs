//! [`RouteHandle`] and the status snapshot: what a `/ready` endpoint and a dashboard read.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use palisade_core::sync::atomic::Ordering;
use palisade_core::{Category, Class};
use tokio::time::Instant;

use crate::HealthState;
use crate::endpoint::{EndpointState, TREND_BUCKETS, millis, ms_since};
use crate::service::Shared;

/// A handle on a router's endpoints, usable from any task: status snapshots and the health
/// checker. Cloning is cheap.
pub struct RouteHandle<K> {
    pub(crate) shared: Arc<Shared<K>>,
}

impl<K> Clone for RouteHandle<K> {
    fn clone(&self) -> Self {
        RouteHandle {
            shared: self.shared.clone(),
        }
    }
}

impl<K> fmt::Debug for RouteHandle<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RouteHandle").finish_non_exhaustive()
    }
}

/// An endpoint's health trend over a window of active checks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Trend {
    /// At least 95 % of checks healthy.
    Healthy,
    /// At least 70 %.
    Degrading,
    /// Below 70 %.
    Unhealthy,
    /// No checks in the window.
    Unknown,
}

/// One endpoint, at one instant.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct EndpointStatus<K> {
    /// Its key: its position in a fixed list, or its discovery key as last inserted (an insert
    /// of an equal key replaces it, see [Discovery](crate#discovery)).
    pub key: K,
    /// Its priority tier.
    pub tier: u8,
    /// The token that names it in the [attempt context](palisade_core::context::attempt).
    pub token: u64,
    /// Its health state (an endpoint on [trial](crate#without-active-checks-trials) is
    /// recovering).
    pub state: HealthState,
    /// The fraction of its traffic its health allows (within `0..=1`), before ejection and
    /// cool-down.
    pub traffic_ratio: f64,
    /// Whether outlier detection has it ejected now (a hold of the health machine is shown by
    /// `state` and `share`, not here).
    pub ejected: bool,
    /// How often it was ejected so far.
    pub ejections: u32,
    /// Whether it is cooling down after a rate limit.
    pub cooling_down: bool,
    /// Consecutive healthy signals.
    pub consecutive_healthy: u8,
    /// Consecutive unhealthy signals.
    pub consecutive_unhealthy: u8,
    /// Calls in flight.
    pub in_flight: u32,
    /// How long ago the last active check ran.
    pub last_check: Option<Duration>,
    /// The category of the last failure seen.
    pub last_error: Option<Category>,
    /// The trend over [`RouteConfig::trend_window`](crate::RouteConfig::trend_window).
    pub trend: Trend,
    /// The fraction of checks in that window that found it healthy (within `0..=1`), if any
    /// ran.
    pub healthy_ratio: Option<f64>,
}

/// The width of one bucket of the trend's ring under `cfg`.
pub(crate) fn trend_bucket_ms(cfg: &crate::RouteConfig) -> u64 {
    (millis(cfg.trend_window) / TREND_BUCKETS as u64).max(1)
}

impl<K: Clone> RouteHandle<K> {
    pub(crate) fn endpoints(&self) -> Vec<(K, Arc<EndpointState>)> {
        self.shared
            .registry
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    pub(crate) fn trend_bucket_ms(&self) -> u64 {
        trend_bucket_ms(&self.shared.config.load())
    }

    /// A snapshot of every endpoint.
    pub fn status(&self) -> Vec<EndpointStatus<K>> {
        let now = ms_since(self.shared.origin, Instant::now());
        let cfg = self.shared.config.load();
        self.endpoints()
            .into_iter()
            .map(|(key, s)| {
                let health = s.health();
                let (healthy, unhealthy) = health.consecutive();
                let (ok, total) = s.trend(now, self.trend_bucket_ms());
                let healthy_ratio = (total > 0).then(|| ok as f64 / total as f64);
                let trend = match healthy_ratio {
                    None => Trend::Unknown,
                    Some(r) if r >= 0.95 => Trend::Healthy,
                    Some(r) if r >= 0.70 => Trend::Degrading,
                    Some(_) => Trend::Unhealthy,
                };
                EndpointStatus {
                    key,
                    tier: s.tier,
                    token: s.token,
                    state: health.state(&cfg.health, now, s.trials()),
                    traffic_ratio: health.share(&cfg.health, now, s.trials()),
                    ejected: s.ejected_until() > now,
                    ejections: s.ejections(),
                    cooling_down: s.cooldown_until() > now,
                    consecutive_healthy: healthy,
                    consecutive_unhealthy: unhealthy,
                    in_flight: s.in_flight.load(Ordering::Relaxed),
                    last_check: s
                        .last_check()
                        .map(|t| Duration::from_millis(now.saturating_sub(t))),
                    last_error: s.last_error(),
                    trend,
                    healthy_ratio,
                }
            })
            .collect()
    }

    /// Whether any endpoint can take traffic now (what a `/ready` endpoint answers): one not
    /// ejected whose health allows it traffic. One cooling down after a rate limit counts:
    /// calls still reach it when every endpoint cools down, and a rate limit is the server
    /// pacing its callers, often one limit shared by every instance of a service, so reporting
    /// it as not ready would take the whole fleet out of its load balancer at once.
    pub fn is_ready(&self) -> bool {
        self.status()
            .iter()
            .any(|s| s.traffic_ratio > 0.0 && !s.ejected)
    }
}

impl<K: PartialEq> RouteHandle<K> {
    /// Counts a failure of `class` against the endpoint `key`, now, as a call of it that failed
    /// with that class would count (a rate limit cools it down; a class that does not count
    /// against health changes nothing). Returns whether the router has that endpoint.
    ///
    /// For failures the router did not see because they came after its call completed: a
    /// streamed response body that failed half-way (palisade-http's `GuardLayer::on_failure`
    /// hands them over). The call itself was counted when its head arrived, as a success, so
    /// this adds a failure to it rather than replacing it. Takes a lock on the endpoint set:
    /// not for the per-call path.
    pub fn report_failure(&self, key: &K, class: Class) -> bool {
        let state = self
            .shared
            .registry
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, s)| s.clone());
        match state {
            Some(state) => {
                state.on_failure_now(class);
                true
            }
            None => false,
        }
    }
}

#[cfg(test)]
#[cfg(not(palisade_loom))]
mod tests {
    use palisade_core::{BoxError, Category, Class};
    use tower::service_fn;

    use std::time::Duration;

    use crate::{HealthState, Route, RouteConfig, Trend, check_fn};

    #[tokio::test(start_paused = true)]
    async fn failures_reported_after_the_fact_count_against_the_endpoint() {
        let endpoint = || service_fn(|_: ()| async { Ok::<_, BoxError>(()) });
        let route = Route::new([endpoint(), endpoint()]);
        let handle = route.handle();
        assert!(!handle.report_failure(&2, Class::new(Category::Network)));
        // Neither a client fault nor a cancellation says anything about the endpoint.
        assert!(handle.report_failure(&0, Class::new(Category::Validation)));
        assert_eq!(handle.status()[0].consecutive_unhealthy, 0);
        for _ in 0..3 {
            assert!(handle.report_failure(&0, Class::new(Category::Network)));
        }
        let status = handle.status();
        assert_eq!(status[0].state, HealthState::Degraded);
        assert_eq!(status[0].consecutive_unhealthy, 3);
        assert_eq!(status[0].last_error, Some(Category::Network));
        assert_eq!(status[1].state, HealthState::Healthy);
        // A rate limit cools the endpoint down.
        handle.report_failure(&1, Class::new(Category::RateLimited));
        assert!(handle.status()[1].cooling_down);
    }

    fn endpoint() -> impl tower::Service<(), Response = (), Error = BoxError, Future: Send> + Clone
    {
        service_fn(|_: ()| async { Ok::<_, BoxError>(()) })
    }

    #[tokio::test(start_paused = true)]
    async fn the_trend_is_the_healthy_share_of_the_window_s_checks() {
        let route = Route::new([endpoint()]);
        let handle = route.handle();
        let st = &handle.status()[0];
        assert_eq!((st.trend, st.healthy_ratio), (Trend::Unknown, None));
        // 19 of 20 checks pass (95 %): healthy; one more failure (19 of 21): degrading.
        let verdicts = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let next = verdicts.clone();
        let check = check_fn(move |_: &usize| {
            let ok = next.lock().unwrap().pop().unwrap_or(true);
            async move {
                if ok {
                    Ok(())
                } else {
                    Err::<(), BoxError>("down".into())
                }
            }
        });
        verdicts.lock().unwrap().push(false);
        for _ in 0..20 {
            handle.check_once(&check, Duration::from_secs(1)).await;
        }
        let st = &handle.status()[0];
        assert_eq!((st.trend, st.healthy_ratio), (Trend::Healthy, Some(0.95)));
        verdicts.lock().unwrap().push(false);
        handle.check_once(&check, Duration::from_secs(1)).await;
        assert_eq!(handle.status()[0].trend, Trend::Degrading);
        // Seven of ten in the window: still degrading; below that, unhealthy.
        tokio::time::advance(Duration::from_secs(300)).await;
        *verdicts.lock().unwrap() = vec![
            false, false, false, true, true, true, true, true, true, true,
        ];
        for _ in 0..10 {
            handle.check_once(&check, Duration::from_secs(1)).await;
        }
        let st = &handle.status()[0];
        assert_eq!((st.trend, st.healthy_ratio), (Trend::Degrading, Some(0.7)));
        verdicts.lock().unwrap().push(false);
        handle.check_once(&check, Duration::from_secs(1)).await;
        assert_eq!(handle.status()[0].trend, Trend::Unhealthy);
    }

    #[tokio::test(start_paused = true)]
    async fn the_trend_forgets_checks_older_than_its_window() {
        // The default window: 300 s in ten buckets of 30 s.
        let route = Route::new([endpoint()]);
        let handle = route.handle();
        let pass = check_fn(|_: &usize| async { Ok::<(), BoxError>(()) });
        handle.check_once(&pass, Duration::from_secs(1)).await;
        tokio::time::advance(Duration::from_millis(299_999)).await;
        assert_eq!(handle.status()[0].healthy_ratio, Some(1.0));
        tokio::time::advance(Duration::from_millis(1)).await;
        assert_eq!(handle.status()[0].healthy_ratio, None);
        assert_eq!(handle.status()[0].trend, Trend::Unknown);
        assert_eq!(
            handle.status()[0].last_check,
            Some(Duration::from_secs(300))
        );
        // A window of its own: 10 s, buckets of 1 s.
        let route = Route::builder([endpoint()])
            .trend_window(Duration::from_secs(10))
            .build()
            .unwrap();
        let handle = route.handle();
        handle.check_once(&pass, Duration::from_secs(1)).await;
        tokio::time::advance(Duration::from_millis(9_999)).await;
        assert_eq!(handle.status()[0].healthy_ratio, Some(1.0));
        tokio::time::advance(Duration::from_millis(1)).await;
        assert_eq!(handle.status()[0].healthy_ratio, None);
    }

    #[tokio::test(start_paused = true)]
    async fn ready_means_some_endpoint_can_take_a_call_now() {
        let route = Route::builder([endpoint(), endpoint()])
            .panic_ratio(None)
            .build()
            .unwrap();
        let handle = route.handle();
        assert!(handle.is_ready());
        let cfg = RouteConfig::default();
        let states = handle.endpoints();
        // One ejected, the other cooling down after a rate limit: the calls reach the one
        // cooling down, at the pace its server sets, so still ready.
        states[0].1.eject(&cfg, 0);
        assert!(handle.is_ready());
        handle.report_failure(&1, Class::new(Category::RateLimited));
        assert!(handle.status()[1].cooling_down);
        assert!(handle.is_ready());
        // Both ejected: nothing can take a call.
        states[1].1.eject(&cfg, 0);
        assert!(!handle.is_ready());
        // Failed by its checks (no traffic, not ejected, not cooling): not ready either.
        let route = Route::new([endpoint()]);
        let handle = route.handle();
        let fail = check_fn(|_: &usize| async { Err::<(), BoxError>("down".into()) });
        for _ in 0..10 {
            handle.check_once(&fail, Duration::from_secs(1)).await;
        }
        let st = &handle.status()[0];
        assert_eq!(
            (st.state, st.traffic_ratio, st.ejected),
            (HealthState::Failed, 0.0, false)
        );
        assert!(!handle.is_ready());
    }
}
