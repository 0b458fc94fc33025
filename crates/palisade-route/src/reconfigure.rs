//! [`RouteHandle::reconfigure`]: a new [`RouteConfig`] for a running router, keeping what its
//! endpoints learnt.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use palisade_core::ConfigError;

use crate::status::trend_bucket_ms;
use crate::{RouteConfig, RouteHandle};

/// The result of [`RouteHandle::reconfigure`]: the new configuration is in force, each
/// endpoint kept its health, and `trend_reset` says whether the one thing that could not carry
/// over, the active checks' trend history, was dropped. `#[non_exhaustive]`: a field may be
/// added.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct RouteReconfigured {
    /// The endpoints whose health state, ejection, cool-down, failure streak, strikes and ramp
    /// were kept.
    pub endpoints: usize,
    /// The trend window before and after, when the change moved the width of the trend's
    /// buckets (a tenth of the window, in whole milliseconds): every endpoint's trend history
    /// was dropped and starts again. `None` when the width stayed, history and all.
    pub trend_reset: Option<(Duration, Duration)>,
}

impl fmt::Display for RouteReconfigured {
    /// What was kept, and the trend history if it was dropped.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "kept the health, ejections and ramps of {} endpoints",
            self.endpoints
        )?;
        if let Some((from, to)) = self.trend_reset {
            write!(
                f,
                "; trend history dropped: trend_window {from:?} → {to:?} changes its buckets"
            )?;
        }
        Ok(())
    }
}

impl<K: Clone> RouteHandle<K> {
    /// The configuration in force.
    pub fn config(&self) -> RouteConfig {
        **self.shared.config.load()
    }

    /// Puts a new configuration in force for every clone of the router, keeping what each
    /// endpoint's history still says under it.
    ///
    /// Kept: each endpoint's health state and the counts that move it (healthy and unhealthy
    /// signals in a row), its failure streak, an ejection or hold in progress (it ends when it
    /// was going to; the new [`OutlierConfig`](crate::OutlierConfig) times the next one, from
    /// the strikes kept), a rate limit's cool-down, and a ramp in progress (its share now
    /// follows the new [`Ramp`](crate::Ramp) from the time it started). New thresholds apply to
    /// the next signal: an endpoint whose streak already reaches a lowered
    /// `consecutive_failures` is ejected at the next pick, not by the change itself.
    /// [`slow_start`](RouteConfig::slow_start) applies to endpoints discovered afterwards. A
    /// new [`seed`](RouteConfig::seed) changes no pick: each router seeds its rng when it is
    /// built (from its builder's configuration) and its clones from it, so running instances
    /// and their clones keep their random sequences. Dropped, and said in the result and in
    /// the event: the trend history when a new [`trend_window`](RouteConfig::trend_window)
    /// changes the width of its buckets (a tenth of the window, in whole milliseconds;
    /// windows that round to the same width keep it).
    ///
    /// Each router instance takes the new configuration at its next `poll_ready` (the same
    /// atomic load that tells it of discovery changes), so a call costs nothing more; the
    /// health checker and [`status`](Self::status) read it at once. One `tracing` event
    /// (`route reconfigured`) says what was kept and reset.
    ///
    /// ```
    /// use std::time::Duration;
    /// use palisade_core::{Category, Class};
    /// use palisade_route::{HealthState, Route};
    /// use tower::{ServiceExt, service_fn};
    ///
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)]
    /// # async fn main() {
    /// let eps = (0..3).map(|i| service_fn(move |_: ()| async move { Ok::<_, std::io::Error>(i) }));
    /// let mut route = Route::builder(eps.collect::<Vec<_>>()).build().unwrap();
    /// let handle = route.handle();
    /// // Endpoint 0 fails three calls in a row: degraded.
    /// for _ in 0..3 {
    ///     handle.report_failure(&0, Class::new(Category::ServerError));
    /// }
    /// assert_eq!(handle.status()[0].state, HealthState::Degraded);
    ///
    /// let mut config = handle.config();
    /// config.cooldown = Duration::from_secs(5);
    /// let done = handle.reconfigure(config).unwrap();
    /// assert_eq!((done.endpoints, done.trend_reset), (3, None));
    /// // The endpoint is still degraded; the router routes with the new configuration.
    /// assert_eq!(handle.status()[0].state, HealthState::Degraded);
    /// route.ready().await.unwrap();
    /// assert_eq!(route.config().cooldown, Duration::from_secs(5));
    ///
    /// // An invalid configuration changes nothing.
    /// config.overprovisioning = 0.5;
    /// assert_eq!(handle.reconfigure(config).unwrap_err().field(), "overprovisioning");
    /// assert_eq!(handle.config().cooldown, Duration::from_secs(5));
    /// # }
    /// ```
    ///
    /// # Errors
    /// A [`ConfigError`] naming the first invalid field (see [`RouteConfig::validate`]); the
    /// router is then left exactly as it was.
    pub fn reconfigure(&self, config: RouteConfig) -> Result<RouteReconfigured, ConfigError> {
        config.validate()?;
        let _one_at_a_time = self
            .shared
            .reconfiguring
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let old = self.shared.config.load_full();
        let endpoints = self.endpoints();
        let trend_reset = (trend_bucket_ms(&old) != trend_bucket_ms(&config))
            .then_some((old.trend_window, config.trend_window));
        self.shared.config.store(Arc::new(config));
        if trend_reset.is_some() {
            for (_, state) in &endpoints {
                state.clear_trend();
            }
        }
        // Every instance takes the new configuration at its next poll_ready: the version
        // first, then the epoch (which voids a cached "every endpoint is plainly healthy").
        self.shared.versions.bump();
        self.shared
            .epoch
            .fetch_add(1, palisade_core::sync::atomic::Ordering::AcqRel);
        let done = RouteReconfigured {
            endpoints: endpoints.len(),
            trend_reset,
        };
        tracing::info!(endpoints = done.endpoints, reset = %done, "route reconfigured");
        Ok(done)
    }
}

#[cfg(test)]
#[cfg(not(palisade_loom))]
mod tests;
