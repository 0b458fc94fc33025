//! [`Detector`]: a streaming anomaly detector with bounded memory.

use std::fmt;

use palisade_core::ConfigError;

/// Flags a value that rises far above its recent level: an exponentially weighted moving
/// average (EWMA) of the value and of its variance, and a band of `k` deviations above the
/// average.
///
/// Each [`observe`](Detector::observe) first tests the value against the band learned so far,
/// then folds it in: `mean += α·d`, `var = (1 − α)(var + α·d²)` with `d = x − mean` (the
/// incremental weighted mean and variance of Finch, *Incremental calculation of weighted mean
/// and variance*, 2009). Memory is four numbers whatever the traffic. Only rises count (a
/// latency or an error rate that drops is good news), and the band is never narrower than
/// `floor`, so that a series that has been perfectly steady (zero variance, as an error rate of
/// exactly 0 is) does not flag its first small wobble. The first `warmup` values only teach.
/// A flagged value teaches only as much as the band's edge (it is winsorised), so one spike
/// does not widen the band enough to hide the next few; a lasting shift still becomes the new
/// level, as the band grows by about half each value it stays outside.
///
/// Defaults (`Detector::new()`): `α = 0.1` (about the last 10 checks weigh most), `k = 4`,
/// `warmup = 5`, `floor = 0`. [`HealthMonitor`](super::HealthMonitor) uses one for error
/// rates (floor 0.05, at least one failure's share of the check's calls, and above the
/// binomial sampling noise of the long-run failure rate) and one for mean
/// latency, without the check's slowest call (floor a quarter of the mean, at least 1 ms).
///
/// ```
/// use palisade::health::Detector;
///
/// let mut latency = Detector::builder().floor(1.0).build()?;
/// for i in 0..50 {
///     // About 100 ms, ±2.
///     assert!(!latency.observe(100.0 + f64::from(i % 5) - 2.0));
/// }
/// assert!(latency.observe(180.0), "a spike far outside the band");
/// assert!(!latency.observe(101.0));
/// # Ok::<(), palisade::classify::ConfigError>(())
/// ```
#[derive(Clone)]
pub struct Detector {
    alpha: f64,
    k: f64,
    warmup: u32,
    floor: f64,
    seen: u32,
    mean: f64,
    var: f64,
}

impl fmt::Debug for Detector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Detector")
            .field("alpha", &self.alpha)
            .field("k", &self.k)
            .field("warmup", &self.warmup)
            .field("floor", &self.floor)
            .field("mean", &self.mean)
            .field("deviation", &self.var.sqrt())
            .finish()
    }
}

impl Default for Detector {
    fn default() -> Self {
        Self::new()
    }
}

impl Detector {
    /// A detector with the defaults: `α = 0.1`, `k = 4`, `warmup = 5`, `floor = 0`.
    pub fn new() -> Self {
        Detector {
            alpha: 0.1,
            k: 4.0,
            warmup: 5,
            floor: 0.0,
            seen: 0,
            mean: 0.0,
            var: 0.0,
        }
    }

    /// A builder starting from the defaults.
    pub fn builder() -> DetectorBuilder {
        DetectorBuilder {
            detector: Detector::new(),
        }
    }

    /// Tests `value` against the band, then learns it. Whether it was anomalous. A value that
    /// is not finite is ignored (not anomalous, not learned).
    pub fn observe(&mut self, value: f64) -> bool {
        if !value.is_finite() {
            return false;
        }
        let anomalous = self.seen >= self.warmup && value > self.threshold();
        // A flagged value teaches only as far as the band's edge (winsorised), so one spike
        // does not widen the band enough to hide the next.
        let d = if anomalous {
            self.threshold() - self.mean
        } else {
            value - self.mean
        };
        if self.seen == 0 {
            self.mean = value;
        } else {
            self.mean += self.alpha * d;
            self.var = (1.0 - self.alpha) * (self.var + self.alpha * d * d);
        }
        self.seen = self.seen.saturating_add(1);
        anomalous
    }

    /// The value above which the next one is anomalous: `mean + max(k·σ, floor)`.
    pub fn threshold(&self) -> f64 {
        self.mean + (self.k * self.var.sqrt()).max(self.floor)
    }

    /// The moving average.
    pub fn mean(&self) -> f64 {
        self.mean
    }

    /// The moving standard deviation.
    pub fn deviation(&self) -> f64 {
        self.var.sqrt()
    }

    /// The band's minimum width, as built (or as last set by the monitor).
    pub(crate) fn floor(&self) -> f64 {
        self.floor
    }

    /// Sets the band's minimum width (used by the monitor to scale a latency floor with the
    /// mean, and an error-rate floor with the sample). Negative or non-finite values are
    /// taken as 0.
    pub(crate) fn set_floor(&mut self, floor: f64) {
        self.floor = if floor.is_finite() {
            floor.max(0.0)
        } else {
            0.0
        };
    }

    /// Whether the warm-up is over.
    pub fn is_warm(&self) -> bool {
        self.seen >= self.warmup
    }
}

/// Builds a [`Detector`]; made by [`Detector::builder`].
#[derive(Clone, Debug)]
#[must_use = "a builder does nothing until `build` is called"]
pub struct DetectorBuilder {
    detector: Detector,
}

impl DetectorBuilder {
    /// The smoothing factor `α`, in `(0, 1]`: the weight of each new value (default 0.1).
    pub fn alpha(mut self, alpha: f64) -> Self {
        self.detector.alpha = alpha;
        self
    }

    /// The band's width in standard deviations, `k > 0` (default 4).
    pub fn k(mut self, k: f64) -> Self {
        self.detector.k = k;
        self
    }

    /// How many values only teach before any can be flagged (default 5).
    pub fn warmup(mut self, warmup: u32) -> Self {
        self.detector.warmup = warmup;
        self
    }

    /// The band's minimum width, in the value's unit, `≥ 0` (default 0).
    pub fn floor(mut self, floor: f64) -> Self {
        self.detector.floor = floor;
        self
    }

    /// The detector.
    ///
    /// # Errors
    /// [`ConfigError`] naming `alpha` outside `(0, 1]`, `k` not above 0, or `floor` below 0
    /// (each also when not finite).
    pub fn build(self) -> Result<Detector, ConfigError> {
        let d = self.detector;
        if !(d.alpha > 0.0 && d.alpha <= 1.0) {
            return Err(ConfigError::new("alpha", "must be within (0, 1]"));
        }
        if !(d.k > 0.0 && d.k.is_finite()) {
            return Err(ConfigError::new("k", "must be a finite number above 0"));
        }
        if !(d.floor >= 0.0 && d.floor.is_finite()) {
            return Err(ConfigError::new(
                "floor",
                "must be a finite number, at least 0",
            ));
        }
        Ok(d)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn learns_then_flags_only_rises_beyond_the_band() {
        let mut d = Detector::builder().warmup(3).k(3.0).build().unwrap();
        // Warm-up: nothing is flagged, however wild.
        assert!(!d.observe(10.0));
        assert!(!d.observe(1000.0));
        assert!(!d.observe(10.0));
        assert!(d.is_warm());
        let mut d = Detector::builder()
            .warmup(5)
            .k(3.0)
            .alpha(0.2)
            .build()
            .unwrap();
        for x in [10.0, 11.0, 9.0, 10.0, 11.0, 9.0, 10.0] {
            assert!(!d.observe(x));
        }
        assert!((d.mean() - 10.0).abs() < 0.5, "{d:?}");
        let t = d.threshold();
        assert!(t > 11.0 && t < 14.0, "threshold {t}");
        assert!(d.observe(t + 0.01));
        // A drop is never an anomaly.
        assert!(!d.observe(-1000.0));
        // Non-finite values are ignored.
        let before = d.mean();
        assert!(!d.observe(f64::NAN));
        assert_eq!(d.mean(), before);
    }

    #[test]
    fn the_floor_keeps_a_flat_series_from_flagging_its_first_wobble() {
        let mut bare = Detector::builder().warmup(2).build().unwrap();
        let mut floored = Detector::builder().warmup(2).floor(0.05).build().unwrap();
        for _ in 0..20 {
            bare.observe(0.0);
            floored.observe(0.0);
        }
        assert_eq!(bare.deviation(), 0.0);
        assert!(
            bare.observe(0.01),
            "zero variance: any rise is outside the band"
        );
        assert!(!floored.observe(0.01));
        assert!(floored.observe(0.2));
    }

    #[test]
    fn a_lasting_shift_becomes_the_new_level() {
        let mut d = Detector::builder().warmup(3).floor(1.0).build().unwrap();
        for _ in 0..20 {
            d.observe(10.0);
        }
        let flagged = (0..60).filter(|_| d.observe(50.0)).count();
        assert!((1..60).contains(&flagged), "flagged {flagged}");
        assert!(!d.observe(50.0), "adapted: {d:?}");
    }

    #[test]
    fn bad_settings_name_the_field() {
        let field = |b: DetectorBuilder| b.build().unwrap_err().field().to_owned();
        assert_eq!(field(Detector::builder().alpha(0.0)), "alpha");
        assert_eq!(field(Detector::builder().alpha(1.5)), "alpha");
        assert_eq!(field(Detector::builder().alpha(f64::NAN)), "alpha");
        assert_eq!(field(Detector::builder().k(0.0)), "k");
        assert_eq!(field(Detector::builder().k(f64::INFINITY)), "k");
        assert_eq!(field(Detector::builder().floor(-1.0)), "floor");
        assert!(Detector::builder().alpha(1.0).build().is_ok());
        assert_eq!(field(Detector::builder().floor(f64::INFINITY)), "floor");
        assert_eq!(field(Detector::builder().floor(f64::NAN)), "floor");
        assert!(Detector::builder().floor(0.0).k(1e-9).build().is_ok());
        let d = Detector::default();
        assert_eq!(
            format!("{d:?}").split(',').next(),
            Some("Detector { alpha: 0.1")
        );
    }

    /// The documented update, step by step: the first value is the mean; then
    /// `d = x − mean` (or `threshold − mean` for a flagged value), `mean += α·d`,
    /// `var = (1 − α)(var + α·d²)`.
    #[test]
    fn each_value_updates_the_mean_and_variance_as_documented() {
        let alpha = 0.25;
        let mut d = Detector::builder()
            .alpha(alpha)
            .k(2.0)
            .warmup(3)
            .build()
            .unwrap();
        let (mut mean, mut var) = (0.0_f64, 0.0_f64);
        for (i, x) in [8.0, 12.0, 10.0, 11.0, 9.0, 30.0, 10.0]
            .into_iter()
            .enumerate()
        {
            let threshold = mean + 2.0 * var.sqrt();
            let flagged = i >= 3 && x > threshold;
            assert_eq!(d.observe(x), flagged, "value {i}: {x}");
            let step = if flagged { threshold - mean } else { x - mean };
            if i == 0 {
                mean = x;
            } else {
                mean += alpha * step;
                var = (1.0 - alpha) * (var + alpha * step * step);
            }
            assert_eq!(
                (d.mean(), d.deviation()),
                (mean, var.sqrt()),
                "after value {i}"
            );
            assert_eq!(d.threshold(), mean + 2.0 * var.sqrt());
            assert_eq!(d.is_warm(), i + 1 >= 3);
        }
        assert!(d.deviation() > 0.0);
        // The spike (30) was flagged and taught only as far as the band's edge.
        assert!(d.mean() < 12.0, "{d:?}");
    }

    #[test]
    fn a_value_exactly_at_the_threshold_is_not_anomalous() {
        let mut d = Detector::builder().warmup(1).floor(2.0).build().unwrap();
        d.observe(10.0);
        assert_eq!(d.threshold(), 12.0);
        assert!(!d.observe(12.0));
        let mut d = Detector::builder().warmup(1).floor(2.0).build().unwrap();
        d.observe(10.0);
        assert!(d.observe(12.0 + 1e-9));
    }

    #[test]
    fn the_first_value_after_the_warm_up_can_be_flagged() {
        let mut d = Detector::builder().warmup(2).floor(1.0).build().unwrap();
        assert!(!d.is_warm());
        assert!(!d.observe(5.0));
        assert!(!d.observe(50.0), "still warming up");
        assert!(d.is_warm());
        let mut d = Detector::builder().warmup(2).floor(1.0).build().unwrap();
        d.observe(5.0);
        d.observe(5.0);
        assert!(d.observe(50.0), "the third value is judged");
        // No warm-up: the very first value is judged against a band around 0.
        let mut d = Detector::builder().warmup(0).floor(1.0).build().unwrap();
        assert!(d.is_warm());
        assert!(d.observe(5.0));
    }

    #[test]
    fn the_monitor_s_floor_is_never_negative_or_nan() {
        let mut d = Detector::new();
        d.observe(10.0);
        d.set_floor(3.0);
        assert_eq!(d.threshold(), 13.0);
        d.set_floor(-3.0);
        assert_eq!(d.threshold(), 10.0);
        d.set_floor(f64::NAN);
        assert_eq!(d.threshold(), 10.0);
        d.set_floor(f64::INFINITY);
        assert_eq!(d.threshold(), 10.0);
    }

    #[test]
    fn debug_shows_the_settings_and_what_was_learned() {
        let mut d = Detector::builder()
            .alpha(0.5)
            .k(3.0)
            .warmup(2)
            .floor(0.5)
            .build()
            .unwrap();
        d.observe(4.0);
        d.observe(8.0);
        // mean 4 + 0.5·4 = 6; var 0.5·(0 + 0.5·16) = 4, deviation 2.
        assert_eq!(
            format!("{d:?}"),
            "Detector { alpha: 0.5, k: 3.0, warmup: 2, floor: 0.5, mean: 6.0, deviation: 2.0 }"
        );
    }
}
