//! Rules that are on by default, turned off in a configuration file with `"off"`, with
//! `#[serde(default, with = "palisade_core::serde_off")]` on an `Option<T>` field.
//!
//! palisade turns a rule off with `None` and only with `None`. When a rule's default is on
//! (`Some`), a file cannot say `None` by leaving the key out (that keeps the default), and
//! TOML has no null; so the word `"off"` reads as `None`, and anything else is read as `T`
//! would be, with `T`'s own errors. An error about the value as a whole (`true`, or a table,
//! where a number goes) offers `"off"` too (`expected a whole number, at least 0, or "off" to
//! turn the rule off`), whatever the value's type; one about an entry of a table or an array
//! (`min_calls = "x"`) is `T`'s alone, as `"off"` could not have replaced that entry. `None`
//! is written as `"off"`.
//!
//! ```
//! #[derive(serde::Deserialize, Debug, PartialEq)]
//! struct Rate {
//!     ratio: f64,
//!     min_calls: u32,
//! }
//!
//! #[derive(serde::Deserialize, Debug)]
//! #[serde(default)]
//! struct Settings {
//!     #[serde(with = "palisade_core::serde_off")]
//!     failure_rate: Option<Rate>,
//!     #[serde(with = "palisade_core::serde_off")]
//!     streak: Option<u32>,
//! }
//!
//! impl Default for Settings {
//!     fn default() -> Self {
//!         Settings { failure_rate: Some(Rate { ratio: 0.9, min_calls: 30 }), streak: Some(5) }
//!     }
//! }
//!
//! let s: Settings = serde_json::from_str(r#"{ "failure_rate": "off", "streak": 3 }"#).unwrap();
//! assert_eq!((s.failure_rate, s.streak), (None, Some(3)));
//! let s: Settings = serde_json::from_str(r#"{ "failure_rate": { "ratio": 0.5, "min_calls": 20 } }"#)
//!     .unwrap();
//! assert_eq!(s.failure_rate, Some(Rate { ratio: 0.5, min_calls: 20 }));
//! assert_eq!(s.streak, Some(5)); // left out: the default
//! let err = serde_json::from_str::<Settings>(r#"{ "streak": "none" }"#).unwrap_err();
//! assert!(err.to_string().contains("\"off\""), "{err}");
//! ```

use std::cell::Cell;
use std::fmt;
use std::marker::PhantomData;

use serde::de::value::{MapAccessDeserializer, SeqAccessDeserializer};
use serde::de::{self, Deserialize, Deserializer, IntoDeserializer, Visitor};
use serde::ser::{Serialize, Serializer};

/// The word that turns a rule off.
pub const OFF: &str = "off";

/// Writes `Some(v)` as `v` would be written, `None` as `"off"`.
pub fn serialize<T: Serialize, S: Serializer>(value: &Option<T>, s: S) -> Result<S::Ok, S::Error> {
    match value {
        Some(v) => v.serialize(s),
        None => s.serialize_str(OFF),
    }
}

/// Reads `"off"` as `None`, anything else as `Some` of what `T` reads.
pub fn deserialize<'de, T: Deserialize<'de>, D: Deserializer<'de>>(
    d: D,
) -> Result<Option<T>, D::Error> {
    d.deserialize_any(OrOff(PhantomData))
}

struct OrOff<T>(PhantomData<fn() -> T>);

impl<'de, T: Deserialize<'de>> OrOff<T> {
    fn value<D: Deserializer<'de>>(d: D) -> Result<Option<T>, D::Error> {
        T::deserialize(d).map(Some)
    }
}

impl<'de, T: Deserialize<'de>> Visitor<'de> for OrOff<T> {
    type Value = Option<T>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "a value, or \"{OFF}\" to turn the rule off")
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
        if v == OFF {
            return Ok(None);
        }
        Self::value(v.into_deserializer()).map_err(offered)
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Self::Value, E> {
        Self::value(v.into_deserializer()).map_err(offered)
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
        Self::value(v.into_deserializer()).map_err(offered)
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
        Self::value(v.into_deserializer()).map_err(offered)
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Self::Value, E> {
        Self::value(v.into_deserializer()).map_err(offered)
    }

    fn visit_map<A: de::MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
        let read = Cell::new(false);
        Self::value(MapAccessDeserializer::new(Watched {
            access: map,
            read: &read,
        }))
        .map_err(|e| if read.get() { e } else { offered(e) })
    }

    fn visit_seq<A: de::SeqAccess<'de>>(self, seq: A) -> Result<Self::Value, A::Error> {
        let read = Cell::new(false);
        Self::value(SeqAccessDeserializer::new(Watched {
            access: seq,
            read: &read,
        }))
        .map_err(|e| if read.get() { e } else { offered(e) })
    }
}

/// `T`'s error about the value as a whole (`true` where a number goes), with `"off"` offered
/// too, as the value could have been `"off"`.
fn offered<E: de::Error>(e: E) -> E {
    E::custom(or_off(&e.to_string()))
}

/// A table's or an array's entries, noting whether `T` read any: an error before it did is
/// about the value as a whole (a table where a number goes), which `"off"` could have
/// replaced; one after is about an entry (`min_calls = "x"`), which it could not.
struct Watched<'r, A> {
    access: A,
    read: &'r Cell<bool>,
}

impl<'de, A: de::MapAccess<'de>> de::MapAccess<'de> for Watched<'_, A> {
    type Error = A::Error;

    fn next_key_seed<K: de::DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, A::Error> {
        self.read.set(true);
        self.access.next_key_seed(seed)
    }

    fn next_value_seed<V: de::DeserializeSeed<'de>>(
        &mut self,
        seed: V,
    ) -> Result<V::Value, A::Error> {
        self.access.next_value_seed(seed)
    }

    fn size_hint(&self) -> Option<usize> {
        self.access.size_hint()
    }
}

impl<'de, A: de::SeqAccess<'de>> de::SeqAccess<'de> for Watched<'_, A> {
    type Error = A::Error;

    fn next_element_seed<T: de::DeserializeSeed<'de>>(
        &mut self,
        seed: T,
    ) -> Result<Option<T::Value>, A::Error> {
        self.read.set(true);
        self.access.next_element_seed(seed)
    }

    fn size_hint(&self) -> Option<usize> {
        self.access.size_hint()
    }
}

/// `T`'s error about a string that is not `"off"`, with `"off"` offered too: trimmed (a
/// format's error may end in a newline), and with what `T` expects in a reader's words rather
/// than Rust's (`expected struct Escalation` reads `expected a table of settings`).
fn or_off(inner: &str) -> String {
    let inner = inner.trim_end();
    let inner = match inner.rsplit_once(", expected ") {
        Some((head, expected)) => format!("{head}, expected {}", in_words(expected)),
        None => inner.to_owned(),
    };
    format!("{inner}, or \"{OFF}\" to turn the rule off")
}

/// What serde's own `expected …` says of a Rust type, in a configuration file's words.
fn in_words(expected: &str) -> &str {
    if expected.starts_with("struct ") || expected.starts_with("map") {
        return "a table of settings";
    }
    match expected {
        "u8" | "u16" | "u32" | "u64" | "u128" | "usize" => "a whole number, at least 0",
        "i8" | "i16" | "i32" | "i64" | "i128" | "isize" => "a whole number",
        "f32" | "f64" => "a number",
        "a boolean" => "true or false",
        other => other,
    }
}

#[cfg(test)]
mod tests {
    #[derive(serde::Serialize, serde::Deserialize, Debug, PartialEq)]
    #[serde(deny_unknown_fields)]
    struct Rate {
        ratio: f64,
        min_calls: u32,
    }

    #[derive(serde::Serialize, serde::Deserialize, Debug, PartialEq)]
    #[serde(default)]
    struct Settings {
        #[serde(with = "super")]
        rate: Option<Rate>,
        #[serde(with = "super")]
        streak: Option<u32>,
        #[serde(with = "super")]
        ratio: Option<f64>,
        #[serde(with = "super")]
        delta: Option<i32>,
        #[serde(with = "super")]
        flag: Option<bool>,
        #[serde(with = "super")]
        name: Option<String>,
        #[serde(with = "super")]
        list: Option<Vec<u8>>,
    }

    impl Default for Settings {
        fn default() -> Self {
            Settings {
                rate: Some(Rate {
                    ratio: 0.9,
                    min_calls: 30,
                }),
                streak: Some(5),
                ratio: Some(0.5),
                delta: Some(-1),
                flag: Some(true),
                name: Some("x".into()),
                list: Some(vec![1]),
            }
        }
    }

    fn read(json: &str) -> Result<Settings, serde_json::Error> {
        serde_json::from_str(json)
    }

    #[test]
    fn off_is_none_for_every_kind_of_value() {
        let all_off = read(
            r#"{"rate":"off","streak":"off","ratio":"off","delta":"off","flag":"off","name":"off","list":"off"}"#,
        )
        .unwrap();
        assert_eq!(
            all_off,
            Settings {
                rate: None,
                streak: None,
                ratio: None,
                delta: None,
                flag: None,
                name: None,
                list: None,
            }
        );
        // Written back, None is "off" again, and reads the same.
        let text = serde_json::to_string(&all_off).unwrap();
        assert!(text.contains(r#""rate":"off""#), "{text}");
        assert_eq!(read(&text).unwrap(), all_off);
    }

    #[test]
    fn any_other_value_is_read_as_its_type() {
        let s = read(
            r#"{"rate":{"ratio":0.5,"min_calls":20},"streak":3,"ratio":0.25,"delta":-7,"flag":false,"name":"on","list":[2,3]}"#,
        )
        .unwrap();
        assert_eq!(
            s,
            Settings {
                rate: Some(Rate {
                    ratio: 0.5,
                    min_calls: 20
                }),
                streak: Some(3),
                ratio: Some(0.25),
                delta: Some(-7),
                flag: Some(false),
                name: Some("on".into()),
                list: Some(vec![2, 3]),
            }
        );
        assert_eq!(read(&serde_json::to_string(&s).unwrap()).unwrap(), s);
        // Left out: the default, on.
        assert_eq!(read("{}").unwrap(), Settings::default());
    }

    #[test]
    fn the_hint_is_trimmed_and_in_a_readers_words() {
        assert_eq!(
            super::or_off("invalid type: string \"of\", expected struct Escalation\n"),
            r#"invalid type: string "of", expected a table of settings, or "off" to turn the rule off"#
        );
        assert_eq!(
            super::or_off("invalid type: string \"x\", expected i32 \n"),
            r#"invalid type: string "x", expected a whole number, or "off" to turn the rule off"#
        );
        assert_eq!(
            super::or_off("invalid type: string \"x\", expected map"),
            r#"invalid type: string "x", expected a table of settings, or "off" to turn the rule off"#
        );
        // What it does not know it keeps; a message without `expected` is kept whole.
        assert_eq!(
            super::or_off("invalid length 3, expected a sequence"),
            r#"invalid length 3, expected a sequence, or "off" to turn the rule off"#
        );
        assert_eq!(
            super::or_off("bad duration\n"),
            r#"bad duration, or "off" to turn the rule off"#
        );
    }

    /// A value of the wrong type for the rule's type offers `"off"` as well, for every type
    /// and every kind of value (`true` where a number goes said only "a whole number, at
    /// least 0"); an error about an entry of a table or an array does not, as `"off"` could
    /// not replace the entry.
    #[test]
    fn a_value_of_the_wrong_type_offers_off_for_every_type() {
        let off = r#", or "off" to turn the rule off"#;
        let cases = [
            (
                r#"{"streak":true}"#,
                "invalid type: boolean `true`, expected a whole number, at least 0",
            ),
            (
                r#"{"streak":-1}"#,
                "invalid value: integer `-1`, expected a whole number, at least 0",
            ),
            (
                r#"{"streak":4294967296}"#,
                "invalid value: integer `4294967296`, expected a whole number, at least 0",
            ),
            (
                r#"{"streak":1.5}"#,
                "invalid type: floating point `1.5`, expected a whole number, at least 0",
            ),
            (
                r#"{"streak":{}}"#,
                "invalid type: map, expected a whole number, at least 0",
            ),
            (
                r#"{"streak":[1]}"#,
                "invalid type: sequence, expected a whole number, at least 0",
            ),
            (
                r#"{"ratio":true}"#,
                "invalid type: boolean `true`, expected a number",
            ),
            (
                r#"{"ratio":{"a":1}}"#,
                "invalid type: map, expected a number",
            ),
            (
                r#"{"ratio":[]}"#,
                "invalid type: sequence, expected a number",
            ),
            (
                r#"{"delta":false}"#,
                "invalid type: boolean `false`, expected a whole number",
            ),
            (
                r#"{"delta":2.5}"#,
                "invalid type: floating point `2.5`, expected a whole number",
            ),
            (
                r#"{"delta":9223372036854775807}"#,
                "invalid value: integer `9223372036854775807`, expected a whole number",
            ),
            (
                r#"{"flag":1}"#,
                "invalid type: integer `1`, expected true or false",
            ),
            (
                r#"{"flag":[true]}"#,
                "invalid type: sequence, expected true or false",
            ),
            (
                r#"{"rate":true}"#,
                "invalid type: boolean `true`, expected a table of settings",
            ),
            (
                r#"{"rate":0.5}"#,
                "invalid type: floating point `0.5`, expected a table of settings",
            ),
            (
                r#"{"name":true}"#,
                "invalid type: boolean `true`, expected a string",
            ),
            (r#"{"name":{}}"#, "invalid type: map, expected a string"),
            (
                r#"{"list":5}"#,
                "invalid type: integer `5`, expected a sequence",
            ),
            (r#"{"list":{}}"#, "invalid type: map, expected a sequence"),
        ];
        for (json, rule) in cases {
            let err = read(json).unwrap_err().to_string();
            assert!(err.starts_with(&format!("{rule}{off}")), "{json}: {err}");
        }
        // About an entry: the type's error alone.
        for json in [
            r#"{"rate":{"ratio":0.5,"min_calls":"x"}}"#,
            r#"{"rate":{"ratio":0.5}}"#,
            r#"{"rate":{}}"#,
            r#"{"rate":[0.5]}"#,
            r#"{"list":[300]}"#,
            r#"{"list":[true]}"#,
        ] {
            let err = read(json).unwrap_err().to_string();
            assert!(!err.contains(r#""off""#), "{json}: {err}");
        }
    }

    #[test]
    fn the_types_own_errors_come_through() {
        let err = read(r#"{"rate":{"ratio":0.5,"min_cals":20}}"#).unwrap_err();
        assert!(
            err.to_string().contains("unknown field `min_cals`"),
            "{err}"
        );
        let err = read(r#"{"streak":"none"}"#).unwrap_err();
        assert!(
            err.to_string().starts_with(
                r#"invalid type: string "none", expected a whole number, at least 0, or "off" to turn the rule off"#
            ),
            "{err}"
        );
        // A table's settings are "a table of settings", not a Rust type's name.
        let err = read(r#"{"rate":"of"}"#).unwrap_err();
        assert!(
            err.to_string().starts_with(
                r#"invalid type: string "of", expected a table of settings, or "off" to turn the rule off"#
            ),
            "{err}"
        );
        let err = read(r#"{"ratio":"half"}"#).unwrap_err();
        assert!(
            err.to_string()
                .starts_with(r#"invalid type: string "half", expected a number, or "off""#),
            "{err}"
        );
        let err = read(r#"{"flag":"yes"}"#).unwrap_err();
        assert!(
            err.to_string()
                .starts_with(r#"invalid type: string "yes", expected true or false, or "off""#),
            "{err}"
        );
        let err = read(r#"{"streak":-1}"#).unwrap_err();
        assert!(err.to_string().contains("invalid value"), "{err}");
        let err = read(r#"{"streak":1.5}"#).unwrap_err();
        assert!(err.to_string().contains("invalid type"), "{err}");
        // "Off" is not the word: only "off" is.
        let err = read(r#"{"streak":"Off"}"#).unwrap_err();
        assert!(err.to_string().contains("invalid type"), "{err}");
        // A null is neither a value nor "off": the message says what is expected.
        let err = read(r#"{"streak":null}"#).unwrap_err();
        assert!(
            err.to_string()
                .contains(r#"invalid type: null, expected a value, or "off" to turn the rule off"#),
            "{err}"
        );
    }
}
