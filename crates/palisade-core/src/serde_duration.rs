//! Durations in configuration files as people write them: `"250ms"`, `"30s"`, `"1m 30s"`,
//! `"2h"` (the `humantime` crate's format), with `#[serde(with = "...")]`.
//!
//! A bare number is taken as milliseconds, so a JSON or environment value of `250` means
//! 250 ms, whether it is a number or a string (`"250"`, `"2.5"`); a value that is neither
//! fails with a message that shows the expected form.
//!
//! ```
//! use std::time::Duration;
//!
//! #[derive(serde::Deserialize)]
//! struct Settings {
//!     #[serde(with = "palisade_core::serde_duration")]
//!     timeout: Duration,
//!     #[serde(default, with = "palisade_core::serde_duration::option")]
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
        let text = v.trim();
        // A bare number is milliseconds in text too: environment variables and other
        // string-only sources give `250` as `"250"`. Read as the number visitors read it.
        if is_bare_number(text) {
            return match text.parse::<u64>() {
                Ok(ms) => self.visit_u64(ms),
                Err(_) if text.contains('.') => self.visit_f64(text.parse().map_err(E::custom)?),
                Err(_) => Err(E::custom(format_args!(
                    "invalid duration {v:?}: too long a number of milliseconds"
                ))),
            };
        }
        if text.strip_prefix('-').is_some_and(is_bare_number) {
            return Err(E::custom(format_args!(
                "invalid duration {v:?}: a duration cannot be negative"
            )));
        }
        humantime::parse_duration(text).map_err(|e| {
            E::custom(format_args!(
                "invalid duration {v:?} ({e}); expected a duration such as \"250ms\", \"30s\" or \"1m 30s\", or a number of milliseconds"
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
            // `try_from_secs_f64`'s own error speaks of float seconds, "too big or NaN".
            Duration::try_from_secs_f64(v / 1000.0).map_err(|_| {
                E::custom(format_args!(
                    "a duration of {v} milliseconds is too long: a duration is at most \
                     {} milliseconds (about 585 billion years)",
                    Duration::MAX.as_millis()
                ))
            })
        } else {
            Err(E::custom(
                "a duration must be a finite number of milliseconds, at least 0",
            ))
        }
    }
}

/// Whether `text` is a plain number of milliseconds: digits, with at most one decimal point
/// (`250`, `2.5`). No sign, exponent or unit: those are `humantime`'s to read or refuse.
fn is_bare_number(text: &str) -> bool {
    text.bytes().any(|b| b.is_ascii_digit())
        && text.bytes().all(|b| b.is_ascii_digit() || b == b'.')
        && text.bytes().filter(|&b| b == b'.').count() <= 1
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

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use serde::{Deserialize, Serialize};

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct One {
        #[serde(with = "super")]
        d: Duration,
    }

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct Maybe {
        #[serde(default, with = "super::option")]
        d: Option<Duration>,
    }

    fn one(json: &str) -> Result<Duration, String> {
        serde_json::from_str::<One>(json)
            .map(|o| o.d)
            .map_err(|e| e.to_string())
    }

    #[test]
    fn reads_text_and_milliseconds() {
        assert_eq!(one(r#"{"d":"1m 30s"}"#), Ok(Duration::from_secs(90)));
        assert_eq!(one(r#"{"d":" 250ms "}"#), Ok(Duration::from_millis(250)));
        assert_eq!(one(r#"{"d":1500}"#), Ok(Duration::from_millis(1500)));
        assert_eq!(one(r#"{"d":2.5}"#), Ok(Duration::from_micros(2500)));
        assert_eq!(one(r#"{"d":0.0}"#), Ok(Duration::ZERO));
        let err = one(r#"{"d":"soon"}"#).unwrap_err();
        assert!(err.contains("invalid duration \"soon\""), "{err}");
        assert!(
            one(r#"{"d":-5}"#)
                .unwrap_err()
                .contains("cannot be negative")
        );
        assert!(one(r#"{"d":-2.5}"#).unwrap_err().contains("finite number"));
        let err = one(r#"{"d":true}"#).unwrap_err();
        assert!(err.contains("a duration such as \"250ms\""), "{err}");
    }

    /// A bare number is milliseconds as text too, as environment variables and other
    /// string-only sources give it; a negative or malformed one says what is expected.
    #[test]
    fn a_bare_number_in_text_is_milliseconds() {
        assert_eq!(one(r#"{"d":"250"}"#), Ok(Duration::from_millis(250)));
        assert_eq!(one(r#"{"d":" 1500 "}"#), Ok(Duration::from_millis(1500)));
        assert_eq!(one(r#"{"d":"0"}"#), Ok(Duration::ZERO));
        assert_eq!(one(r#"{"d":"2.5"}"#), Ok(Duration::from_micros(2500)));
        for negative in [r#"{"d":"-5"}"#, r#"{"d":" -2.5"}"#] {
            let err = one(negative).unwrap_err();
            assert!(err.contains("cannot be negative"), "{err}");
        }
        let err = one(r#"{"d":"99999999999999999999999"}"#).unwrap_err();
        assert!(err.contains("too long"), "{err}");
        for garbage in [r#"{"d":"1.2.3"}"#, r#"{"d":"12 apples"}"#, r#"{"d":""}"#] {
            let err = one(garbage).unwrap_err();
            assert!(err.contains("invalid duration"), "{err}");
            assert!(err.contains("or a number of milliseconds"), "{err}");
        }
    }

    #[test]
    fn writes_text_that_reads_back() {
        let text = serde_json::to_string(&One {
            d: Duration::from_millis(90_250),
        })
        .unwrap();
        assert_eq!(text, r#"{"d":"1m 30s 250ms"}"#);
        assert_eq!(one(&text), Ok(Duration::from_millis(90_250)));
        let some = Maybe {
            d: Some(Duration::from_secs(2)),
        };
        assert_eq!(serde_json::to_string(&some).unwrap(), r#"{"d":"2s"}"#);
        assert_eq!(
            serde_json::to_string(&Maybe { d: None }).unwrap(),
            r#"{"d":null}"#
        );
        assert_eq!(
            serde_json::from_str::<Maybe>(r#"{"d":"2s"}"#).unwrap(),
            some
        );
        assert_eq!(
            serde_json::from_str::<Maybe>("{}").unwrap(),
            Maybe { d: None }
        );
        assert_eq!(
            serde_json::from_str::<Maybe>(r#"{"d":null}"#).unwrap(),
            Maybe { d: None }
        );
    }
}
