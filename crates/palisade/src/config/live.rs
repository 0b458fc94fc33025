//! [`PresetHandle`]: a preset built from a [`PresetConfig`] whose configuration changes while
//! it runs.

use std::fmt;
use std::sync::{Arc, Mutex};

use palisade_breaker::{BreakerHandle, BreakerLayer, Reconfigured};
use palisade_core::{ConfigError, DefaultClassifier};
use palisade_retry::budget::{Rebalanced, Throttled};
use palisade_route::{RouteHandle, RouteReconfigured};

use super::PresetConfig;
use crate::preset::Preset;

impl PresetConfig {
    /// The preset, as [`builder`](Self::builder) then `build` make it, and a [`PresetHandle`]
    /// that changes its configuration while it runs.
    ///
    /// # Errors
    /// A [`ConfigError`] naming the key path of the first value that breaks its rule.
    pub fn build_with_handle(&self) -> Result<(Preset, PresetHandle), ConfigError> {
        self.build_with_classifier(DefaultClassifier::default())
    }

    /// [`build_with_handle`](Self::build_with_handle), with `classifier` at the bottom of the
    /// stack (an HTTP or gRPC classifier, your own).
    ///
    /// # Errors
    /// As [`build_with_handle`](Self::build_with_handle).
    pub fn build_with_classifier<C>(
        &self,
        classifier: C,
    ) -> Result<(Preset<C>, PresetHandle), ConfigError> {
        self.validate()?;
        let budget = Arc::new(self.retry.budget.build()?);
        let breaker = BreakerLayer::builder(self.name.clone())
            .config(self.breaker)
            .build()
            .map_err(|e| super::breaker_error(e, &self.breaker))?;
        let handle = PresetHandle {
            breaker: breaker.handle(),
            budget: budget.clone(),
            route: None,
            running: Arc::new(Mutex::new(self.clone())),
        };
        let preset = self
            .builder_sharing(budget)?
            .breaker_layer(breaker)
            .classifier(classifier)
            .build()?;
        Ok((preset, handle))
    }
}

/// Changes a running preset's configuration; made by [`PresetConfig::build_with_handle`].
/// Cheap to clone; every clone acts on the same stack.
///
/// [`reconfigure`](Self::reconfigure) applies a new [`PresetConfig`] to what can change
/// while calls run, keeping its state, and lists what needs a stack built from the new
/// configuration:
///
/// | part | live? | kept |
/// |---|---|---|
/// | `[breaker]` | yes, for every call from the next one | state, open period, back-off, failure streak, the window when its kind and size are the same ([`BreakerHandle::reconfigure`]) |
/// | `[retry.budget]` `ratio`, `min_per_second`, `floor_per_second`, `max_tokens`, `token_ratio` | yes | the requests and retries counted, the tokens (cut to a smaller bucket) |
/// | `[route]` but `seed` and `slow_start` | yes, with [`with_route`](Self::with_route) | each endpoint's health, ejection, cool-down, ramp ([`RouteHandle::reconfigure`]) |
/// | `name`, `deadline`, `[attempt_timeout]`, `[retry]` `max_attempts`, `backoff`, `cap`, `jitter`, `seed`, `wait_for_breaker`, `wait_for_budget`, `min_attempt_time`, `[retry.budget]` `ttl`, `[route]` `seed` (a running router keeps its random sequence) and `slow_start` (it applies to endpoints discovered later; the file's are there from the start), `[[endpoints]]`, `[features]` | no: build a new stack | — |
///
/// The result, and its one `tracing` event (`preset reconfigured`), say which live keys
/// changed ([`PresetReconfigured::changed`]), what each part kept and reset, and which keys
/// need a new stack.
///
/// The parts that are not live are read once per stack, on the per-call path; making them
/// live would cost every call a load, so they are not (the happy path of the preset takes no
/// more instructions than before this handle existed).
#[derive(Clone)]
pub struct PresetHandle {
    breaker: BreakerHandle,
    budget: Arc<Throttled>,
    route: Option<RouteHandle<usize>>,
    /// The configuration in force for the live parts, and as built for the others.
    running: Arc<Mutex<PresetConfig>>,
}

impl fmt::Debug for PresetHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PresetHandle")
            .field("breaker", &self.breaker.name())
            .field("route", &self.route.is_some())
            .finish_non_exhaustive()
    }
}

impl PresetHandle {
    /// The preset's breaker.
    pub fn breaker(&self) -> &BreakerHandle {
        &self.breaker
    }

    /// The preset's retry budget.
    pub fn budget(&self) -> &Arc<Throttled> {
        &self.budget
    }

    /// Also reconfigures this router (the one [`PresetConfig::route`] built from the same
    /// file) when `[route]` changes.
    pub fn with_route(mut self, route: RouteHandle<usize>) -> Self {
        self.route = Some(route);
        self
    }

    /// The configuration in force: the live parts as last reconfigured, the others as the
    /// stack was built.
    pub fn config(&self) -> PresetConfig {
        self.running
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Applies `config` to the running stack: the breaker, the retry budget and (with
    /// [`with_route`](Self::with_route)) the router change at once, keeping their state (see
    /// the table above); every other key that differs from the running stack's is listed in
    /// [`PresetReconfigured::needs_rebuild`], unapplied. One `tracing` event (target
    /// `palisade`, `preset reconfigured`) says what changed, what was reset and what waits
    /// for a rebuild; the breaker, the budget and the router log their own too.
    ///
    /// ```
    /// use std::time::Duration;
    /// use palisade::breaker::{Reset, State, Window};
    /// use palisade::classify::BoxError;
    /// use palisade::config::PresetConfig;
    /// use tower::{Service, ServiceBuilder, ServiceExt, service_fn};
    ///
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)]
    /// # async fn main() -> Result<(), BoxError> {
    /// let config = PresetConfig::from_toml(r#"
    ///     name = "llm"
    ///     [breaker]
    ///     consecutive_failures = 3
    /// "#)?;
    /// let (preset, handle) = config.build_with_handle()?;
    /// let mut llm = ServiceBuilder::new()
    ///     .layer(preset)
    ///     .service(service_fn(|_: ()| async { Err::<(), BoxError>("503 overloaded".into()) }));
    /// let _ = llm.ready().await?.call(()).await; // 3 attempts, 3 failures: open
    /// assert_eq!(handle.breaker().state(), State::Open);
    ///
    /// // A new file: a longer open period, a stricter budget, more attempts.
    /// let next = PresetConfig::from_toml(r#"
    ///     name = "llm"
    ///     [breaker]
    ///     consecutive_failures = 3
    ///     open_duration = "2s"
    ///     max_open_duration = "10s"
    ///     [retry]
    ///     max_attempts = 5
    ///     [retry.budget]
    ///     ratio = 0.05
    /// "#)?;
    /// let done = handle.reconfigure(next)?;
    /// // The breaker is still open, its window kept; the budget changed in place.
    /// assert_eq!(done.breaker.state, State::Open);
    /// assert!(done.breaker.is_lossless());
    /// assert_eq!(handle.budget().budget().ratio(), 0.05);
    /// // max_attempts is read by the retry layer per call: a new stack takes it.
    /// assert_eq!(done.needs_rebuild, ["retry.max_attempts"]);
    ///
    /// // Invalid: nothing changes, the error names the key.
    /// let mut bad = handle.config();
    /// bad.breaker.half_open_probes = 0;
    /// assert_eq!(handle.reconfigure(bad).unwrap_err().field(), "breaker.half_open_probes");
    /// assert_eq!(handle.breaker().config().open_duration, Duration::from_secs(2));
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// A [`ConfigError`] naming the key path of the first value that breaks its rule (as
    /// [`PresetConfig::validate`]); nothing changes then.
    pub fn reconfigure(&self, config: PresetConfig) -> Result<PresetReconfigured, ConfigError> {
        config.validate()?;
        let mut running = self.running.lock().unwrap_or_else(|e| e.into_inner());
        let old = running.clone();
        let mut needs_rebuild = Vec::new();
        let mut differs = |key: &'static str, changed: bool| {
            if changed {
                needs_rebuild.push(key);
            }
        };
        differs("name", config.name != old.name);
        differs("deadline", config.deadline != old.deadline);
        differs(
            "attempt_timeout",
            config.attempt_timeout != old.attempt_timeout,
        );
        differs(
            "retry.max_attempts",
            config.retry.max_attempts != old.retry.max_attempts,
        );
        differs("retry.backoff", config.retry.backoff != old.retry.backoff);
        differs("retry.cap", config.retry.cap != old.retry.cap);
        differs("retry.jitter", config.retry.jitter != old.retry.jitter);
        differs("retry.seed", config.retry.seed != old.retry.seed);
        differs(
            "retry.wait_for_breaker",
            config.retry.wait_for_breaker != old.retry.wait_for_breaker,
        );
        differs(
            "retry.wait_for_budget",
            config.retry.wait_for_budget != old.retry.wait_for_budget,
        );
        differs(
            "retry.min_attempt_time",
            config.retry.min_attempt_time != old.retry.min_attempt_time,
        );
        differs(
            "retry.budget.ttl",
            config.retry.budget.ttl != old.retry.budget.ttl,
        );
        differs("endpoints", config.endpoints != old.endpoints);
        differs("features", config.features != old.features);
        // No `[route]` section reads as its defaults: leaving it out, or writing the defaults,
        // changes nothing.
        let (new_route, was_route) = (
            config.route.unwrap_or_default(),
            old.route.unwrap_or_default(),
        );
        // What a running router takes: every `[route]` key but these two, which stay as built
        // (and in force): its random sequence is drawn from the seed it was built with, and
        // slow start applies to endpoints discovered later, where the file's are all there
        // from the start.
        let mut live_route = new_route;
        live_route.seed = was_route.seed;
        live_route.slow_start = was_route.slow_start;
        let route_changed = live_route != was_route;
        differs("route", new_route != was_route && self.route.is_none());
        if self.route.is_some() {
            differs("route.seed", new_route.seed != was_route.seed);
            differs(
                "route.slow_start",
                new_route.slow_start != was_route.slow_start,
            );
        }
        // The live keys whose new values the running stack takes.
        let b = config.retry.budget;
        let ob = old.retry.budget;
        let mut changed = Vec::new();
        for (key, differ) in [
            ("breaker", config.breaker != old.breaker),
            ("retry.budget.ratio", b.ratio != ob.ratio),
            (
                "retry.budget.min_per_second",
                b.min_per_second != ob.min_per_second,
            ),
            (
                "retry.budget.floor_per_second",
                b.floor_per_second != ob.floor_per_second,
            ),
            ("retry.budget.max_tokens", b.max_tokens != ob.max_tokens),
            ("retry.budget.token_ratio", b.token_ratio != ob.token_ratio),
            ("route", route_changed && self.route.is_some()),
        ] {
            if differ {
                changed.push(key);
            }
        }
        // Everything is valid: from here on nothing can be refused.
        let breaker = self
            .breaker
            .reconfigure(config.breaker)
            .map_err(|e| super::breaker_error(e, &config.breaker))?;
        let budget = self
            .budget
            .budget()
            .reconfigure(|s| {
                s.ratio(b.ratio)
                    .min_per_second(b.min_per_second)
                    .floor_per_second(b.floor_per_second)
            })
            .map_err(|e| e.within("retry.budget"))?;
        let throttle = self
            .budget
            .throttle()
            .reconfigure(|s| s.max_tokens(b.max_tokens).token_ratio(b.token_ratio))
            .map_err(|e| e.within("retry.budget"))?;
        let route = match (&self.route, route_changed) {
            (Some(route), true) => {
                let settings = live_route;
                Some(
                    route
                        .reconfigure(settings)
                        .map_err(|e| super::route_error(e, &settings))?,
                )
            }
            _ => None,
        };
        // The live parts are now the new ones; the others stay as built.
        running.breaker = config.breaker;
        running.retry.budget.ratio = b.ratio;
        running.retry.budget.min_per_second = b.min_per_second;
        running.retry.budget.floor_per_second = b.floor_per_second;
        running.retry.budget.max_tokens = b.max_tokens;
        running.retry.budget.token_ratio = b.token_ratio;
        if route.is_some() {
            running.route = Some(live_route);
        }
        let done = PresetReconfigured {
            changed,
            breaker,
            budget,
            throttle,
            route,
            needs_rebuild,
        };
        tracing::info!(
            target: "palisade",
            name = %running.name,
            changed = %done.changed.join(", "),
            reset = %done,
            "preset reconfigured"
        );
        Ok(done)
    }
}

/// What [`PresetHandle::reconfigure`] did. `#[non_exhaustive]`: a field may be added.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct PresetReconfigured {
    /// The keys whose new values the running stack took (`breaker` for any of its keys,
    /// `retry.budget.ratio` and the budget's other keys each by name, `route` for any of the
    /// router's); empty when nothing live changed.
    pub changed: Vec<&'static str>,
    /// The breaker: its state, kept, and what could not be.
    pub breaker: Reconfigured,
    /// The retry budget's balance before and after its new ratio and reserve.
    pub budget: Rebalanced,
    /// The retry throttle's, after its new size and refill (and its tokens, if cut).
    pub throttle: Rebalanced,
    /// The router's, when one was given ([`PresetHandle::with_route`]) and `[route]` changed.
    pub route: Option<RouteReconfigured>,
    /// The keys whose new values the running stack does not take (read once per stack):
    /// build a stack from the new configuration for them.
    pub needs_rebuild: Vec<&'static str>,
}

impl fmt::Display for PresetReconfigured {
    /// One line: what changed, breaker, budget, throttle, router, and what needs a rebuild.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.changed.is_empty() {
            f.write_str("nothing live changed; ")?;
        } else {
            write!(f, "changed: {}; ", self.changed.join(", "))?;
        }
        write!(
            f,
            "breaker ({}): {}; budget: {}; throttle: {}",
            self.breaker.state, self.breaker, self.budget, self.throttle
        )?;
        if let Some(route) = &self.route {
            write!(f, "; route: {route}")?;
        }
        if !self.needs_rebuild.is_empty() {
            write!(f, "; needs a rebuild: {}", self.needs_rebuild.join(", "))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
