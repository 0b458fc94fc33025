//! Server hints: how long a server asked the caller to wait, parsed from header values.
//!
//! Pure functions over strings, shared by the HTTP and gRPC integrations and usable on their
//! own. Each returns the wait the server asked for, as sent: none of them cuts a long hint
//! short, so "retry in an hour" stays an hour and the layer that reads it (the retry layer's
//! `max_retry_after` ceiling, a breaker's open time) decides what a long wait means. The only
//! bound is [`LONGEST`]: a value beyond it (a hint of centuries, or digits that overflow) comes
//! back as [`LONGEST`], which is still longer than any ceiling a layer sets, so it still reads
//! as "too long". Nonsense (negative, not a number, NaN, infinite) is `None`, never a panic.
//!
//! | header | function | notes |
//! |---|---|---|
//! | `retry-after-ms` | [`retry_after_ms`] | milliseconds, decimals allowed |
//! | `Retry-After` | [`retry_after`] | delta-seconds or an HTTP-date relative to a `now` you give |
//! | `Retry-After` | [`retry_after_now`] | the same, relative to [`wall_clock`] |
//! | `grpc-retry-pushback-ms` | [`grpc_retry_pushback_ms`] | negative or malformed: do not retry |
//! | `x-should-retry` | [`should_retry`] | `true` / `false` |
//!
//! ```
//! use palisade_core::hint::{self, Pushback};
//! use std::time::{Duration, SystemTime};
//!
//! assert_eq!(hint::retry_after_ms("1500"), Some(Duration::from_millis(1500)));
//! // An hour is an hour: whether to wait that long is the retry layer's decision.
//! assert_eq!(hint::retry_after("3600", SystemTime::UNIX_EPOCH), Some(Duration::from_secs(3600)));
//! assert_eq!(hint::retry_after("-3", SystemTime::UNIX_EPOCH), None);
//! assert_eq!(hint::grpc_retry_pushback_ms("-1"), Pushback::DoNotRetry);
//! assert_eq!(hint::should_retry(" TRUE "), Some(true));
//! ```
//!
//! # HTTP dates and the clock
//!
//! `Retry-After` may be a date. [`retry_after`] turns it into a delay from a `now` the caller
//! passes and reads no clock: pass the response's own `Date` header to measure the delay on the
//! server's clock (immune to skew between the two machines), or [`wall_clock`] for this
//! process's. [`retry_after_now`] is the shorthand for the latter.
//!
//! [`wall_clock`] is the one place palisade reads wall time. It is the system time moved by
//! however far tokio's clock (`tokio::time::Instant`, the clock every palisade layer reads) is
//! from the real monotonic clock. On a running runtime the two are the same clock and it is the
//! system time; on a paused test clock it moves exactly as far as the test advances time and
//! not at all otherwise, so an HTTP-date hint counts down with the timeouts and backoffs around
//! it, in tests and in the simulator alike.
//!
//! ```
//! use palisade_core::hint;
//! use std::time::Duration;
//!
//! # #[cfg(feature = "http")]
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! // A server that asks for 30 s, as a date (whole seconds, so up to 1 s less).
//! let date = httpdate::fmt_http_date(hint::wall_clock() + Duration::from_secs(30));
//! let wait = hint::retry_after_now(&date).unwrap();
//! assert!(wait <= Duration::from_secs(30) && wait > Duration::from_secs(28));
//! # }
//! # #[cfg(not(feature = "http"))]
//! # fn main() {}
//! ```
//!
//! The HTTP-date form needs the crate's `http` feature (it brings the `httpdate` parser);
//! without it [`retry_after`] reads delta-seconds only and returns `None` for a date.

use std::time::{Duration, SystemTime};

/// The longest wait a parser returns: 365 days. A longer hint comes back as this, still longer
/// than any ceiling a layer sets, so it still reads as "too long"; values stay small enough to
/// add to any `Instant` or `SystemTime` without overflow.
pub const LONGEST: Duration = Duration::from_secs(365 * 24 * 60 * 60);

/// Converts a number of seconds into a duration, as given up to [`LONGEST`] (longer saturates to
/// it); `None` for negative, NaN or infinite input.
pub fn secs_f64(secs: f64) -> Option<Duration> {
    if !secs.is_finite() || secs < 0.0 {
        return None;
    }
    if secs >= LONGEST.as_secs_f64() {
        return Some(LONGEST);
    }
    Duration::try_from_secs_f64(secs).ok()
}

/// Parses a non-negative decimal number of `unit`s (`"2"`, `"1.5"`; no sign, exponent or hex)
/// exactly, to the nanosecond; longer than [`LONGEST`] (however many digits) saturates to it.
pub(crate) fn decimal(value: &str, unit: Duration) -> Option<Duration> {
    let v = value.trim();
    let (int, frac) = v.split_once('.').unwrap_or((v, ""));
    if int.is_empty()
        || !int.bytes().all(|b| b.is_ascii_digit())
        || (v.contains('.') && frac.is_empty())
        || !frac.bytes().all(|b| b.is_ascii_digit())
    {
        return None;
    }
    let longest = LONGEST.as_nanos();
    let unit = unit.as_nanos();
    let Ok(int) = int.parse::<u128>() else {
        return Some(LONGEST); // more digits than a u128: absurdly long
    };
    let whole = int.saturating_mul(unit);
    // Nine fractional digits are finer than a nanosecond of any unit used here.
    let digits = &frac[..frac.len().min(9)];
    let part = match digits.parse::<u128>() {
        Ok(n) => n * unit / 10u128.pow(digits.len() as u32),
        Err(_) => 0, // no fractional digits
    };
    let nanos = whole.saturating_add(part).min(longest);
    Some(Duration::new(
        (nanos / 1_000_000_000) as u64,
        (nanos % 1_000_000_000) as u32,
    ))
}

/// `retry-after-ms`: milliseconds to wait (OpenAI and Anthropic style), as sent.
pub fn retry_after_ms(value: &str) -> Option<Duration> {
    decimal(value, Duration::from_millis(1))
}

/// `Retry-After` (RFC 9110 §10.2.3): delta-seconds, or an HTTP-date converted to a delay from
/// `now` (a date in the past means "now": zero; dates need the `http` feature). As sent, up to
/// [`LONGEST`].
///
/// Reads no clock: `now` is the response's `Date` header, [`wall_clock`], or a test's fixed
/// instant (see [HTTP dates and the clock](self#http-dates-and-the-clock)). Decimal seconds
/// (`1.5`) are accepted too, since some servers send them.
pub fn retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let v = value.trim();
    if let Some(wait) = decimal(v, Duration::from_secs(1)) {
        return Some(wait);
    }
    date_delay(v, now)
}

#[cfg(feature = "http")]
fn date_delay(v: &str, now: SystemTime) -> Option<Duration> {
    let date = httpdate::parse_http_date(v).ok()?;
    Some(
        date.duration_since(now)
            .unwrap_or(Duration::ZERO)
            .min(LONGEST),
    )
}

#[cfg(not(feature = "http"))]
fn date_delay(_: &str, _: SystemTime) -> Option<Duration> {
    None
}

/// [`retry_after`] relative to [`wall_clock`]: the delay from this process's wall time, which a
/// paused tokio clock controls in tests.
pub fn retry_after_now(value: &str) -> Option<Duration> {
    retry_after(value, wall_clock())
}

/// The wall-clock time on tokio's clock, for turning HTTP dates into delays.
///
/// The system time, moved by the difference between `tokio::time::Instant::now()` and the real
/// monotonic clock. On a running (unpaused) runtime, or outside any runtime, that difference is
/// nil and this is `SystemTime::now()`, clock adjustments included. On a paused clock
/// (`#[tokio::test(start_paused = true)]`, the simulator) it is the wall time when the clock
/// was paused plus however far it has been advanced since: it moves exactly as the test moves
/// time, so HTTP-date hints are covered deterministically there.
///
/// This is the only function in palisade that reads the system's wall time.
#[allow(
    clippy::disallowed_methods,
    reason = "the real monotonic clock is read only to measure how far tokio's clock is from it"
)]
pub fn wall_clock() -> SystemTime {
    let system = SystemTime::now();
    let real = std::time::Instant::now();
    let tokio = tokio::time::Instant::now().into_std();
    let moved = match tokio.checked_duration_since(real) {
        Some(ahead) => system.checked_add(ahead),
        None => system.checked_sub(real.duration_since(tokio)),
    };
    moved.unwrap_or(system)
}

/// What `grpc-retry-pushback-ms` says (gRPC proposal A6).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pushback {
    /// Retry after this delay: as sent, up to [`LONGEST`].
    After(Duration),
    /// Do not retry: the value was negative or malformed.
    DoNotRetry,
}

/// `grpc-retry-pushback-ms`: a non-negative integer number of milliseconds to wait; a negative
/// or malformed value means the server asks the client not to retry.
pub fn grpc_retry_pushback_ms(value: &str) -> Pushback {
    let v = value.trim();
    if v.is_empty() || !v.bytes().all(|b| b.is_ascii_digit()) {
        return Pushback::DoNotRetry;
    }
    match v.parse::<u64>() {
        Ok(ms) => Pushback::After(Duration::from_millis(ms).min(LONGEST)),
        // All digits but too large for u64: an absurdly long wait.
        Err(_) => Pushback::After(LONGEST),
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

    const HOUR: Duration = Duration::from_secs(3600);

    #[test]
    fn retry_after_ms_values() {
        assert_eq!(retry_after_ms("0"), Some(Duration::ZERO));
        assert_eq!(retry_after_ms("250"), Some(Duration::from_millis(250)));
        assert_eq!(retry_after_ms("1.5"), Some(Duration::from_micros(1500)));
        assert_eq!(retry_after_ms(" 20 "), Some(Duration::from_millis(20)));
        // Long hints come back as sent, not cut to some ceiling.
        assert_eq!(retry_after_ms("3600000"), Some(HOUR));
        assert_eq!(
            retry_after_ms("999999999"),
            Some(Duration::from_millis(999_999_999))
        );
        // Absurd ones saturate at LONGEST, even past what an f64 holds.
        assert_eq!(retry_after_ms("99999999999999999999"), Some(LONGEST));
        assert_eq!(retry_after_ms(&"9".repeat(400)), Some(LONGEST));
        for bad in [
            "", "-1", "abc", "1e3", "NaN", "inf", "1.2.3", ".5", "5.", "+5", "0x10",
        ] {
            assert_eq!(retry_after_ms(bad), None, "{bad:?}");
        }
    }

    #[cfg(feature = "http")]
    #[test]
    fn retry_after_seconds_and_dates() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_445_412_480); // 2015-10-21 07:28:00
        assert_eq!(retry_after("30", now), Some(Duration::from_secs(30)));
        assert_eq!(retry_after("61", now), Some(Duration::from_secs(61)));
        assert_eq!(retry_after("3600", now), Some(HOUR));
        assert_eq!(
            retry_after("Wed, 21 Oct 2015 07:28:10 GMT", now),
            Some(Duration::from_secs(10))
        );
        // In the past: no wait.
        assert_eq!(
            retry_after("Wed, 21 Oct 2015 07:27:00 GMT", now),
            Some(Duration::ZERO)
        );
        // An hour ahead is an hour.
        assert_eq!(
            retry_after("Wed, 21 Oct 2015 08:28:00 GMT", now),
            Some(HOUR)
        );
        // Far future: saturates at LONGEST.
        assert_eq!(
            retry_after("Fri, 01 Jan 2100 00:00:00 GMT", now),
            Some(LONGEST)
        );
        // Obsolete RFC 850 and asctime formats are part of HTTP-date too.
        assert_eq!(
            retry_after("Wednesday, 21-Oct-15 07:28:05 GMT", now),
            Some(Duration::from_secs(5))
        );
        assert_eq!(
            retry_after("Wed Oct 21 07:28:07 2015", now),
            Some(Duration::from_secs(7))
        );
        for bad in ["", "-5", "soon", "Wed, 99 Oct 2015 07:28:00 GMT", "NaN"] {
            assert_eq!(retry_after(bad, now), None, "{bad:?}");
        }
    }

    #[cfg(feature = "http")]
    #[test]
    fn a_date_measured_against_the_servers_own_date_header() {
        let date = httpdate::parse_http_date("Wed, 21 Oct 2015 07:28:00 GMT").unwrap();
        assert_eq!(
            retry_after("Wed, 21 Oct 2015 07:28:42 GMT", date),
            Some(Duration::from_secs(42))
        );
    }

    /// `a` and `b` differ by `d`, within the few nanoseconds between two clock reads.
    fn about(a: Duration, b: Duration) -> bool {
        a.abs_diff(b) < Duration::from_millis(1)
    }

    #[cfg(feature = "http")]
    #[tokio::test(start_paused = true)]
    async fn http_dates_count_down_with_the_paused_clock() {
        let start = wall_clock();
        // Whole seconds, as HTTP-dates are: the date is 30 s after `start`'s second.
        let date = httpdate::fmt_http_date(start + Duration::from_secs(30));
        let first = retry_after_now(&date).unwrap();
        assert!(
            first <= Duration::from_secs(30) && first > Duration::from_secs(29),
            "{first:?}"
        );

        tokio::time::advance(Duration::from_secs(10)).await;
        assert!(about(
            wall_clock().duration_since(start).unwrap(),
            Duration::from_secs(10)
        ));
        let later = retry_after_now(&date).unwrap();
        assert!(about(first - later, Duration::from_secs(10)), "{later:?}");

        // Past the date: no wait.
        tokio::time::advance(Duration::from_secs(21)).await;
        assert_eq!(retry_after_now(&date), Some(Duration::ZERO));
    }

    #[tokio::test(start_paused = true)]
    async fn the_paused_wall_clock_stands_still_until_advanced() {
        let a = wall_clock();
        tokio::task::yield_now().await;
        let b = wall_clock();
        assert!(about(
            b.duration_since(a).unwrap_or_else(|e| e.duration()),
            Duration::ZERO
        ));
    }

    #[test]
    fn outside_a_paused_runtime_the_wall_clock_is_the_system_time() {
        let system = SystemTime::now();
        let ours = wall_clock();
        let gap = ours.duration_since(system).unwrap_or_else(|e| e.duration());
        assert!(gap < Duration::from_secs(1), "{gap:?}");
    }

    #[test]
    fn grpc_pushback() {
        assert_eq!(
            grpc_retry_pushback_ms("100"),
            Pushback::After(Duration::from_millis(100))
        );
        assert_eq!(grpc_retry_pushback_ms("3600000"), Pushback::After(HOUR));
        assert_eq!(grpc_retry_pushback_ms("-1"), Pushback::DoNotRetry);
        assert_eq!(grpc_retry_pushback_ms(""), Pushback::DoNotRetry);
        assert_eq!(grpc_retry_pushback_ms("1.5"), Pushback::DoNotRetry);
        assert_eq!(grpc_retry_pushback_ms("ten"), Pushback::DoNotRetry);
        assert_eq!(
            grpc_retry_pushback_ms("18446744073709551615"),
            Pushback::After(LONGEST)
        );
        assert_eq!(
            grpc_retry_pushback_ms("99999999999999999999999"),
            Pushback::After(LONGEST)
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
        assert_eq!(secs_f64(f64::NAN), None);
        assert_eq!(secs_f64(f64::INFINITY), None);
        assert_eq!(secs_f64(-0.5), None);
        // Zero is a wait of nothing, not a negative number.
        assert_eq!(secs_f64(0.0), Some(Duration::ZERO));
        assert_eq!(secs_f64(-0.0), Some(Duration::ZERO));
        assert_eq!(secs_f64(1e300), Some(LONGEST));
        assert_eq!(secs_f64(LONGEST.as_secs_f64()), Some(LONGEST));
        assert_eq!(secs_f64(0.25), Some(Duration::from_millis(250)));
        assert_eq!(secs_f64(7200.0), Some(2 * HOUR));
    }

    proptest! {
        #[test]
        fn hints_never_panic_and_stay_within_longest(value in ".{0,40}", secs in 0u64..1_000_000_000_000) {
            let now = SystemTime::UNIX_EPOCH + Duration::from_secs(secs);
            if let Some(d) = retry_after_ms(&value) { prop_assert!(d <= LONGEST); }
            if let Some(d) = retry_after(&value, now) { prop_assert!(d <= LONGEST); }
            if let Pushback::After(d) = grpc_retry_pushback_ms(&value) { prop_assert!(d <= LONGEST); }
            let _ = should_retry(&value);
        }

        /// Every hint up to LONGEST comes back exactly, whatever ceiling a layer will apply.
        #[test]
        fn numeric_hints_round_trip_uncut(ms in 0..=LONGEST.as_millis() as u64) {
            let d = Duration::from_millis(ms);
            prop_assert_eq!(retry_after_ms(&ms.to_string()), Some(d));
            prop_assert_eq!(grpc_retry_pushback_ms(&ms.to_string()), Pushback::After(d));
            let secs = ms / 1000;
            prop_assert_eq!(retry_after(&secs.to_string(), SystemTime::UNIX_EPOCH), Some(Duration::from_secs(secs)));
        }

        #[test]
        fn longer_hints_saturate(ms in LONGEST.as_millis() as u64..u64::MAX) {
            prop_assert_eq!(retry_after_ms(&ms.to_string()), Some(LONGEST));
            prop_assert_eq!(grpc_retry_pushback_ms(&ms.to_string()), Pushback::After(LONGEST));
            prop_assert_eq!(retry_after(&ms.to_string(), SystemTime::UNIX_EPOCH), Some(LONGEST));
        }

        #[cfg(feature = "http")]
        #[test]
        fn dates_round_trip_to_the_second(now in 0u64..4_000_000_000, ahead in 0u64..LONGEST.as_secs()) {
            let now = SystemTime::UNIX_EPOCH + Duration::from_secs(now);
            let date = httpdate::fmt_http_date(now + Duration::from_secs(ahead));
            prop_assert_eq!(retry_after(&date, now), Some(Duration::from_secs(ahead)));
        }

        #[test]
        fn negative_numbers_are_rejected(n in 1i64..i64::MAX) {
            let v = format!("-{n}");
            prop_assert_eq!(retry_after_ms(&v), None);
            prop_assert_eq!(retry_after(&v, SystemTime::UNIX_EPOCH), None);
            prop_assert_eq!(grpc_retry_pushback_ms(&v), Pushback::DoNotRetry);
        }
    }
}
