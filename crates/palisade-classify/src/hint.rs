//! Server hints: how long a server asked the caller to wait, parsed from header values.
//!
//! Pure functions over strings, shared by the HTTP and gRPC integrations and usable on their
//! own. Every function clamps the hint to a `max` the caller gives, and answers `None` to
//! nonsense (negative, not a number, NaN, infinite, overflowing) instead of panicking.
//!
//! | header | function | notes |
//! |---|---|---|
//! | `retry-after-ms` | [`retry_after_ms`] | milliseconds, decimals allowed |
//! | `Retry-After` | [`retry_after`] | delta-seconds or an HTTP-date relative to `now` |
//! | `grpc-retry-pushback-ms` | [`grpc_retry_pushback_ms`] | negative or malformed: do not retry |
//! | `x-should-retry` | [`should_retry`] | `true` / `false` |
//!
//! ```
//! use palisade_classify::hint::{self, Pushback};
//! use std::time::{Duration, SystemTime};
//!
//! let max = Duration::from_secs(60);
//! assert_eq!(hint::retry_after_ms("1500", max), Some(Duration::from_millis(1500)));
//! assert_eq!(hint::retry_after("120", SystemTime::UNIX_EPOCH, max), Some(max)); // clamped
//! assert_eq!(hint::retry_after("-3", SystemTime::UNIX_EPOCH, max), None);
//! assert_eq!(hint::grpc_retry_pushback_ms("-1", max), Pushback::DoNotRetry);
//! assert_eq!(hint::should_retry(" TRUE "), Some(true));
//! ```

use std::time::{Duration, SystemTime};

/// Converts a number of seconds into a duration clamped to `max`; `None` for negative, NaN or
/// infinite input.
pub fn secs_f64(secs: f64, max: Duration) -> Option<Duration> {
    if !secs.is_finite() || secs < 0.0 {
        return None;
    }
    if secs >= max.as_secs_f64() {
        return Some(max);
    }
    Duration::try_from_secs_f64(secs).ok().map(|d| d.min(max))
}

/// Parses a non-negative decimal number (`"2"`, `"1.5"`); no sign, exponent or hex.
fn decimal(value: &str) -> Option<f64> {
    let v = value.trim();
    if v.is_empty()
        || !v.bytes().all(|b| b.is_ascii_digit() || b == b'.')
        || v.bytes().filter(|&b| b == b'.').count() > 1
        || v.starts_with('.')
        || v.ends_with('.')
    {
        return None;
    }
    v.parse().ok()
}

/// `retry-after-ms`: milliseconds to wait (OpenAI and Anthropic style), clamped to `max`.
pub fn retry_after_ms(value: &str, max: Duration) -> Option<Duration> {
    secs_f64(decimal(value)? / 1000.0, max)
}

/// `Retry-After` (RFC 9110 §10.2.3): delta-seconds, or an HTTP-date converted to a delay from
/// `now` (a date in the past means "now": zero). Clamped to `max`.
///
/// Decimal seconds (`1.5`) are accepted too, since some servers send them.
pub fn retry_after(value: &str, now: SystemTime, max: Duration) -> Option<Duration> {
    let v = value.trim();
    if let Some(secs) = decimal(v) {
        return secs_f64(secs, max);
    }
    let date = httpdate::parse_http_date(v).ok()?;
    Some(date.duration_since(now).unwrap_or(Duration::ZERO).min(max))
}

/// What `grpc-retry-pushback-ms` says (gRPC proposal A6).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pushback {
    /// Retry after this delay (already clamped).
    After(Duration),
    /// Do not retry: the value was negative or malformed.
    DoNotRetry,
}

/// `grpc-retry-pushback-ms`: a non-negative integer number of milliseconds to wait; a negative
/// or malformed value means the server asks the client not to retry.
pub fn grpc_retry_pushback_ms(value: &str, max: Duration) -> Pushback {
    let v = value.trim();
    if v.is_empty() || !v.bytes().all(|b| b.is_ascii_digit()) {
        return Pushback::DoNotRetry;
    }
    match v.parse::<u64>() {
        Ok(ms) => Pushback::After(Duration::from_millis(ms).min(max)),
        // All digits but too large for u64: an absurdly long wait, clamped.
        Err(_) => Pushback::After(max),
    }
}

/// `x-should-retry`: `true` or `false` (case-insensitive, surrounding spaces ignored); anything
/// else is no opinion.
pub fn should_retry(value: &str) -> Option<bool> {
    let v = value.trim();
    if v.eq_ignore_ascii_case("true") {
        Some(true)
    } else if v.eq_ignore_ascii_case("false") {
        Some(false)
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const MAX: Duration = Duration::from_secs(60);

    #[test]
    fn retry_after_ms_values() {
        assert_eq!(retry_after_ms("0", MAX), Some(Duration::ZERO));
        assert_eq!(retry_after_ms("250", MAX), Some(Duration::from_millis(250)));
        assert_eq!(
            retry_after_ms("1.5", MAX),
            Some(Duration::from_micros(1500))
        );
        assert_eq!(retry_after_ms(" 20 ", MAX), Some(Duration::from_millis(20)));
        assert_eq!(retry_after_ms("999999999", MAX), Some(MAX));
        for bad in [
            "", "-1", "abc", "1e3", "NaN", "inf", "1.2.3", ".5", "5.", "+5", "0x10",
        ] {
            assert_eq!(retry_after_ms(bad, MAX), None, "{bad:?}");
        }
    }

    #[test]
    fn retry_after_seconds_and_dates() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_445_412_480); // 2015-10-21 07:28:00
        assert_eq!(retry_after("30", now, MAX), Some(Duration::from_secs(30)));
        assert_eq!(retry_after("61", now, MAX), Some(MAX));
        assert_eq!(
            retry_after("Wed, 21 Oct 2015 07:28:10 GMT", now, MAX),
            Some(Duration::from_secs(10))
        );
        // In the past: no wait.
        assert_eq!(
            retry_after("Wed, 21 Oct 2015 07:27:00 GMT", now, MAX),
            Some(Duration::ZERO)
        );
        // Far future: clamped.
        assert_eq!(
            retry_after("Fri, 01 Jan 2100 00:00:00 GMT", now, MAX),
            Some(MAX)
        );
        // Obsolete RFC 850 and asctime formats are part of HTTP-date too.
        assert_eq!(
            retry_after("Wednesday, 21-Oct-15 07:28:05 GMT", now, MAX),
            Some(Duration::from_secs(5))
        );
        assert_eq!(
            retry_after("Wed Oct 21 07:28:07 2015", now, MAX),
            Some(Duration::from_secs(7))
        );
        for bad in ["", "-5", "soon", "Wed, 99 Oct 2015 07:28:00 GMT", "NaN"] {
            assert_eq!(retry_after(bad, now, MAX), None, "{bad:?}");
        }
    }

    #[test]
    fn grpc_pushback() {
        assert_eq!(
            grpc_retry_pushback_ms("100", MAX),
            Pushback::After(Duration::from_millis(100))
        );
        assert_eq!(grpc_retry_pushback_ms("-1", MAX), Pushback::DoNotRetry);
        assert_eq!(grpc_retry_pushback_ms("", MAX), Pushback::DoNotRetry);
        assert_eq!(grpc_retry_pushback_ms("1.5", MAX), Pushback::DoNotRetry);
        assert_eq!(grpc_retry_pushback_ms("ten", MAX), Pushback::DoNotRetry);
        assert_eq!(
            grpc_retry_pushback_ms("99999999999999999999999", MAX),
            Pushback::After(MAX)
        );
    }

    #[test]
    fn should_retry_values() {
        assert_eq!(should_retry("true"), Some(true));
        assert_eq!(should_retry("False"), Some(false));
        assert_eq!(should_retry("yes"), None);
        assert_eq!(should_retry(""), None);
    }

    #[test]
    fn secs_f64_rejects_nonsense() {
        assert_eq!(secs_f64(f64::NAN, MAX), None);
        assert_eq!(secs_f64(f64::INFINITY, MAX), None);
        assert_eq!(secs_f64(-0.5, MAX), None);
        assert_eq!(secs_f64(1e300, MAX), Some(MAX));
        assert_eq!(secs_f64(0.25, MAX), Some(Duration::from_millis(250)));
    }

    proptest! {
        #[test]
        fn hints_never_panic_and_respect_the_clamp(value in ".{0,40}", max_ms in 0u64..10_000_000) {
            let max = Duration::from_millis(max_ms);
            let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
            if let Some(d) = retry_after_ms(&value, max) { prop_assert!(d <= max); }
            if let Some(d) = retry_after(&value, now, max) { prop_assert!(d <= max); }
            if let Pushback::After(d) = grpc_retry_pushback_ms(&value, max) { prop_assert!(d <= max); }
            let _ = should_retry(&value);
        }

        #[test]
        fn numeric_hints_round_trip_below_the_clamp(ms in 0u64..60_000) {
            let max = Duration::from_secs(120);
            prop_assert_eq!(retry_after_ms(&ms.to_string(), max), Some(Duration::from_millis(ms)));
            prop_assert_eq!(grpc_retry_pushback_ms(&ms.to_string(), max), Pushback::After(Duration::from_millis(ms)));
            let secs = ms / 1000;
            prop_assert_eq!(retry_after(&secs.to_string(), SystemTime::UNIX_EPOCH, max), Some(Duration::from_secs(secs)));
        }

        #[test]
        fn negative_numbers_are_rejected(n in 1i64..i64::MAX) {
            let v = format!("-{n}");
            prop_assert_eq!(retry_after_ms(&v, MAX), None);
            prop_assert_eq!(retry_after(&v, SystemTime::UNIX_EPOCH, MAX), None);
            prop_assert_eq!(grpc_retry_pushback_ms(&v, MAX), Pushback::DoNotRetry);
        }
    }
}
