//! Durations in configuration files as people write them: `"250ms"`, `"30s"`, `"1m 30s"`,
//! `"2h"` (the `humantime` crate's format), with `#[serde(with = "...")]`.
//!
//! A bare number is taken as milliseconds, so a JSON or environment value of `250` means
//! 250 ms; a value that is neither fails with a message that shows the expected form.
//!
//! ```
//! use std::time::Duration;
//!
//! #[derive(serde::Deserialize)]
//! struct Settings {
//!     #[serde(with = "palisade_classify::serde_duration")]
//!     timeout: Duration,
//!     #[serde(default, with = "palisade_classify::serde_duration::option")]
//!     slow_call: Option<Duration>,
//! }
//!
//! let s: Settings = serde_json::from_str(r#"{ "timeout": "1m 30s" }"#).unwrap();
//! assert_eq!(s.timeout, Duration::from_secs(90));
//! assert_eq!(s.slow_call, None);
//! let s: Settings = serde_json::from_str(r#"{ "timeout": 250, "slow_call": "2s" }"#).unwrap();
//! assert_eq!((s.timeout, s.slow_call), (Duration::from_millis(250), Some(Duration::from_secs(2))));
//! assert!(serde_json::from_str::<Settings>(r#"{ "timeout": "soon" }"#).is_err());
//! ```

use std::fmt;
use std::time::Duration;

use serde::de::{self, Deserializer, Visitor};
use serde::ser::Serializer;

/// Writes a duration as `humantime` does (`"1m 30s"`, `"250ms"`).
pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(&humantime::format_duration(*d))
}

/// Reads `"250ms"`, `"30s"`, `"1m 30s"`..., or a number of milliseconds.
pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    d.deserialize_any(HumanDuration)
}

struct HumanDuration;

impl<'de> Visitor<'de> for HumanDuration {
    type Value = Duration;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(
            "a duration such as \"250ms\", \"30s\" or \"1m 30s\", or a number of milliseconds",
        )
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Duration, E> {
        humantime::parse_duration(v.trim()).map_err(|e| {
            E::custom(format_args!(
                "invalid duration {v:?} ({e}); expected a duration such as \"250ms\", \"30s\" or \"1m 30s\""
            ))
        })
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Duration, E> {
        Ok(Duration::from_millis(v))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Duration, E> {
        u64::try_from(v)
            .map(Duration::from_millis)
            .map_err(|_| E::custom("a duration cannot be negative"))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Duration, E> {
        if v.is_finite() && v >= 0.0 {
            Duration::try_from_secs_f64(v / 1000.0).map_err(E::custom)
        } else {
            Err(E::custom(
                "a duration must be a finite number of milliseconds, at least 0",
            ))
        }
    }
}

/// The same for `Option<Duration>` (absent or `null`: `None`).
pub mod option {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    /// Writes `Some` as a `humantime` duration, `None` as nothing.
    pub fn serialize<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => super::serialize(d, s),
            None => s.serialize_none(),
        }
    }

    /// Reads an optional duration.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        #[derive(Deserialize)]
        struct Wrap(#[serde(with = "super")] Duration);
        Ok(Option::<Wrap>::deserialize(d)?.map(|Wrap(d)| d))
    }
}
