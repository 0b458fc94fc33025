//! Seeds in configuration files: any `u64`, as a whole number or, beyond what TOML can write
//! as one, as a string of digits, with `#[serde(with = "palisade_core::serde_seed")]`.
//!
//! A seed is a `u64`, but a TOML integer is an `i64`: a seed above `9223372036854775807`
//! (half of them, such as one drawn from the operating system and logged) cannot be written
//! as a number. It is written as a string of decimal digits instead
//! (`seed = "18446744073709551615"`), which an environment variable gives anyway; a number
//! is read as well, in any format. A negative number, or a string that is not a seed, is
//! refused with the range. A seed up to `i64::MAX` is written as a number, one above it as a
//! string, so that what is written reads back in TOML too.
//!
//! ```
//! #[derive(serde::Deserialize, serde::Serialize, Debug, PartialEq)]
//! struct Settings {
//!     #[serde(with = "palisade_core::serde_seed")]
//!     seed: u64,
//! }
//!
//! let s: Settings = serde_json::from_str(r#"{ "seed": 7 }"#).unwrap();
//! assert_eq!(s.seed, 7);
//! let s: Settings = serde_json::from_str(r#"{ "seed": "18446744073709551615" }"#).unwrap();
//! assert_eq!(s.seed, u64::MAX);
//! assert_eq!(serde_json::to_string(&s).unwrap(), r#"{"seed":"18446744073709551615"}"#);
//! let err = serde_json::from_str::<Settings>(r#"{ "seed": -1 }"#).unwrap_err();
//! assert!(err.to_string().contains("from 0 to 18446744073709551615"), "{err}");
//! ```

use std::fmt;

use serde::de::{self, Deserializer, Unexpected, Visitor};
use serde::ser::Serializer;

/// Writes a seed as a number, or as a string of digits above `i64::MAX` (TOML's largest
/// integer).
pub fn serialize<S: Serializer>(seed: &u64, s: S) -> Result<S::Ok, S::Error> {
    if i64::try_from(*seed).is_ok() {
        s.serialize_u64(*seed)
    } else {
        s.collect_str(seed)
    }
}

/// Reads a whole number from 0 to `u64::MAX`, or a string of decimal digits holding one.
pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    d.deserialize_any(Seed)
}

struct Seed;

impl Visitor<'_> for Seed {
    type Value = u64;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "a seed, a whole number from 0 to {max} (written as a string above {top}, TOML's \
             largest integer: \"{max}\")",
            max = u64::MAX,
            top = i64::MAX,
        )
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<u64, E> {
        Ok(v)
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<u64, E> {
        u64::try_from(v).map_err(|_| E::invalid_value(Unexpected::Signed(v), &self))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<u64, E> {
        let digits = v.trim();
        // Digits only: `u64::from_str` would take a `+` too.
        if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return Err(E::invalid_value(Unexpected::Str(v), &self));
        }
        digits
            .parse()
            .map_err(|_| E::invalid_value(Unexpected::Str(v), &self))
    }
}

/// The same for `Option<u64>` (absent or `null`: `None`).
pub mod option {
    use serde::{Deserialize, Deserializer, Serializer};

    /// Writes `Some` as [`serialize`](super::serialize) does, `None` as nothing.
    pub fn serialize<S: Serializer>(seed: &Option<u64>, s: S) -> Result<S::Ok, S::Error> {
        match seed {
            Some(seed) => super::serialize(seed, s),
            None => s.serialize_none(),
        }
    }

    /// Reads an optional seed.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
        #[derive(Deserialize)]
        struct Wrap(#[serde(with = "super")] u64);
        Ok(Option::<Wrap>::deserialize(d)?.map(|Wrap(seed)| seed))
    }
}

#[cfg(test)]
mod tests {
    use serde::{Deserialize, Serialize};

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct One {
        #[serde(with = "super")]
        seed: u64,
    }

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct Maybe {
        #[serde(default, with = "super::option")]
        seed: Option<u64>,
    }

    fn read(json: &str) -> Result<u64, String> {
        serde_json::from_str::<One>(json)
            .map(|one| one.seed)
            .map_err(|e| e.to_string())
    }

    #[test]
    fn a_seed_is_a_number_or_a_string_of_digits() {
        assert_eq!(read(r#"{"seed":0}"#), Ok(0));
        assert_eq!(read(r#"{"seed":18446744073709551615}"#), Ok(u64::MAX));
        assert_eq!(read(r#"{"seed":"18446744073709551615"}"#), Ok(u64::MAX));
        assert_eq!(read(r#"{"seed":"9223372036854775808"}"#), Ok(1 << 63));
        assert_eq!(read(r#"{"seed":" 42 "}"#), Ok(42));
        assert_eq!(read(r#"{"seed":"0"}"#), Ok(0));
    }

    #[test]
    fn what_is_not_a_seed_is_refused_with_the_range() {
        let expected = "a seed, a whole number from 0 to 18446744073709551615 (written as a \
                        string above 9223372036854775807, TOML's largest integer: \
                        \"18446744073709551615\")";
        for (json, found) in [
            (r#"{"seed":-1}"#, "invalid value: integer `-1`"),
            (r#"{"seed":"-1"}"#, "invalid value: string \"-1\""),
            (r#"{"seed":"+1"}"#, "invalid value: string \"+1\""),
            (r#"{"seed":""}"#, "invalid value: string \"\""),
            (r#"{"seed":"seven"}"#, "invalid value: string \"seven\""),
            (r#"{"seed":"0x10"}"#, "invalid value: string \"0x10\""),
            (
                r#"{"seed":"18446744073709551616"}"#,
                "invalid value: string \"18446744073709551616\"",
            ),
            (r#"{"seed":1.5}"#, "invalid type: floating point `1.5`"),
            (r#"{"seed":true}"#, "invalid type: boolean `true`"),
        ] {
            let err = read(json).unwrap_err();
            assert!(
                err.starts_with(&format!("{found}, expected {expected}")),
                "{json}: {err}"
            );
        }
    }

    #[test]
    fn a_seed_is_written_as_a_number_up_to_i64_max_and_reads_back() {
        for (seed, text) in [
            (7, r#"{"seed":7}"#),
            (i64::MAX as u64, r#"{"seed":9223372036854775807}"#),
            (1 << 63, r#"{"seed":"9223372036854775808"}"#),
            (u64::MAX, r#"{"seed":"18446744073709551615"}"#),
        ] {
            let written = serde_json::to_string(&One { seed }).unwrap();
            assert_eq!(written, text);
            assert_eq!(read(&written), Ok(seed));
        }
    }

    #[test]
    fn an_optional_seed_is_none_when_absent_or_null() {
        let read = |json: &str| serde_json::from_str::<Maybe>(json).map(|m| m.seed);
        assert_eq!(read("{}").unwrap(), None);
        assert_eq!(read(r#"{"seed":null}"#).unwrap(), None);
        assert_eq!(
            read(r#"{"seed":"18446744073709551615"}"#).unwrap(),
            Some(u64::MAX)
        );
        assert!(read(r#"{"seed":-1}"#).is_err());
        let written = serde_json::to_string(&Maybe {
            seed: Some(u64::MAX),
        })
        .unwrap();
        assert_eq!(written, r#"{"seed":"18446744073709551615"}"#);
        assert_eq!(
            serde_json::to_string(&Maybe { seed: None }).unwrap(),
            r#"{"seed":null}"#
        );
    }
}
