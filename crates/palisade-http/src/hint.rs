//! Server hints read from response headers: how long to wait, and whether to retry at all.
//!
//! [`ServerHints::from_headers`] reads every header below, through the shared parsers of
//! [`palisade_core::hint`] (one parser per format across palisade), plus the rate-limit
//! resets of LLM APIs, parsed here: durations by [`reset_duration`], dates by [`reset_date`].
//!
//! | header | meaning | read as |
//! |---|---|---|
//! | `retry-after-ms` | milliseconds to wait (OpenAI's and Anthropic's APIs send it with 429 and 503) | preferred over `Retry-After` when both are present, being finer |
//! | `Retry-After` | delta-seconds or an HTTP-date ([RFC 9110 §10.2.3](https://www.rfc-editor.org/rfc/rfc9110#section-10.2.3)) | a date is measured from [`wall_clock`](palisade_core::hint::wall_clock) (tokio's clock, so paused-clock tests cover it), or from the response's own `Date` header when asked |
//! | `grpc-retry-pushback-ms` | gRPC's server pushback ([gRPC A6](https://github.com/grpc/proposal/blob/master/A6-client-retries.md)): milliseconds, or negative for "do not retry" | a malformed value, bytes that are not visible ASCII included, means "do not retry", as A6 specifies |
//! | `x-should-retry` | `true` / `false`: the server's own verdict (OpenAI's and Anthropic's APIs) | overrides whether the failure is retryable, either way |
//! | `x-ratelimit-reset-requests`, `x-ratelimit-reset-tokens` | when a rate-limit window resets, as a duration such as `1s`, `6m0s`, `20ms`, `1h2m3.5s` (OpenAI's and Groq's APIs) | read only for a rate-limited response, when nothing above gave a wait: the reset of an exhausted limit (its `x-ratelimit-remaining-*` is `0`), else the soonest reset (see [`rate_limit_reset`]) |
//! | `anthropic-ratelimit-requests-reset`, `anthropic-ratelimit-tokens-reset`, `anthropic-ratelimit-input-tokens-reset`, `anthropic-ratelimit-output-tokens-reset` | when a rate-limit window resets, as an RFC 3339 date such as `2024-01-01T00:00:30Z` (Anthropic's API) | as the row above, with `anthropic-ratelimit-*-remaining`; the date is measured like `Retry-After`'s |
//!
//! A value that does not parse is ignored (never a panic); so is a header whose bytes are not
//! visible ASCII. The exception is `grpc-retry-pushback-ms`: A6 reads a malformed pushback as
//! "do not retry", so that is what a value that does not parse means, whatever its bytes.
//! Waits come back as sent, up to [`LONGEST`]: whether a wait is too long is the retry
//! layer's decision (its `max_retry_after`), not the parser's.
//!
//! ```
//! use http::HeaderMap;
//! use palisade_http::hint::{ServerHints, reset_date, reset_duration};
//! use std::time::{Duration, SystemTime};
//!
//! let mut headers = HeaderMap::new();
//! headers.insert("retry-after-ms", "1500".parse().unwrap());
//! headers.insert("retry-after", "2".parse().unwrap());
//! headers.insert("x-should-retry", "true".parse().unwrap());
//! let hints = ServerHints::from_headers(&headers, SystemTime::UNIX_EPOCH);
//! assert_eq!(hints.retry_after, Some(Duration::from_millis(1500)));
//! assert_eq!(hints.should_retry, Some(true));
//!
//! assert_eq!(reset_duration("6m0s"), Some(Duration::from_secs(360)));
//! assert_eq!(reset_duration("1h2m3.5s"), Some(Duration::from_millis(3_723_500)));
//! assert_eq!(reset_duration("soon"), None);
//!
//! let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_704_067_200); // 2024-01-01T00:00:00Z
//! assert_eq!(reset_date("2024-01-01T00:00:30Z", now), Some(Duration::from_secs(30)));
//! assert_eq!(reset_date("2024-01-01T01:00:30+01:00", now), Some(Duration::from_secs(30)));
//! assert_eq!(reset_date("2023-12-31T23:59:00Z", now), Some(Duration::ZERO)); // past: now
//! assert_eq!(reset_date("6m0s", now), None);
//! ```

use std::time::{Duration, SystemTime};

use http::HeaderMap;
use http::header::{DATE, RETRY_AFTER};
use palisade_core::hint::{self, LONGEST, Pushback};

/// `retry-after-ms`.
pub const RETRY_AFTER_MS: &str = "retry-after-ms";
/// `x-should-retry`.
pub const X_SHOULD_RETRY: &str = "x-should-retry";
/// `grpc-retry-pushback-ms`.
pub const GRPC_RETRY_PUSHBACK_MS: &str = "grpc-retry-pushback-ms";
/// `x-ratelimit-reset-requests`.
pub const X_RATELIMIT_RESET_REQUESTS: &str = "x-ratelimit-reset-requests";
/// `x-ratelimit-reset-tokens`.
pub const X_RATELIMIT_RESET_TOKENS: &str = "x-ratelimit-reset-tokens";
/// `x-ratelimit-remaining-requests`.
pub const X_RATELIMIT_REMAINING_REQUESTS: &str = "x-ratelimit-remaining-requests";
/// `x-ratelimit-remaining-tokens`.
pub const X_RATELIMIT_REMAINING_TOKENS: &str = "x-ratelimit-remaining-tokens";

/// The rate limits whose resets [`rate_limit_reset`] reads: each one's reset header, its
/// remaining header, and whether the reset is an RFC 3339 date (else a duration).
///
/// OpenAI's and Groq's `x-ratelimit-*` carry durations; Anthropic's `anthropic-ratelimit-*`
/// carry dates (its API documents one pair per limit: requests, tokens, input tokens, output
/// tokens).
pub const RATE_LIMITS: &[(&str, &str, ResetFormat)] = &[
    (
        X_RATELIMIT_RESET_REQUESTS,
        X_RATELIMIT_REMAINING_REQUESTS,
        ResetFormat::Duration,
    ),
    (
        X_RATELIMIT_RESET_TOKENS,
        X_RATELIMIT_REMAINING_TOKENS,
        ResetFormat::Duration,
    ),
    (
        "anthropic-ratelimit-requests-reset",
        "anthropic-ratelimit-requests-remaining",
        ResetFormat::Date,
    ),
    (
        "anthropic-ratelimit-tokens-reset",
        "anthropic-ratelimit-tokens-remaining",
        ResetFormat::Date,
    ),
    (
        "anthropic-ratelimit-input-tokens-reset",
        "anthropic-ratelimit-input-tokens-remaining",
        ResetFormat::Date,
    ),
    (
        "anthropic-ratelimit-output-tokens-reset",
        "anthropic-ratelimit-output-tokens-remaining",
        ResetFormat::Date,
    ),
];

/// How a rate-limit reset header says when the window resets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ResetFormat {
    /// A duration from now, as Go prints it (`6m0s`): [`reset_duration`].
    Duration,
    /// An RFC 3339 date (`2024-01-01T00:00:30Z`): [`reset_date`].
    Date,
}

/// What a response's headers say about retrying it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ServerHints {
    /// How long the server asked the caller to wait: `retry-after-ms`, else `Retry-After`, else
    /// a `grpc-retry-pushback-ms` delay.
    pub retry_after: Option<Duration>,
    /// `x-should-retry`, when present and `true` or `false`.
    pub should_retry: Option<bool>,
    /// `grpc-retry-pushback-ms`, when present ([`Pushback::DoNotRetry`] when malformed, not
    /// visible ASCII included).
    pub pushback: Option<Pushback>,
    /// When the exhausted rate-limit window resets (`x-ratelimit-reset-*`,
    /// `anthropic-ratelimit-*-reset`; see [`rate_limit_reset`]); read apart from `retry_after`
    /// because it only means "wait" for a rate-limited response.
    pub rate_limit_reset: Option<Duration>,
    /// Whether [`rate_limit_reset`](Self::rate_limit_reset) is the reset of a limit the
    /// headers say is used up (its remaining count `0`); `false` when no limit says so and it
    /// is only the soonest of the resets given, a guess that a wait the body states
    /// (`Please try again in 3s`) beats.
    pub rate_limit_exhausted: bool,
}

impl ServerHints {
    /// Reads the hints in `headers`, measuring dates (an HTTP-date `Retry-After`, an RFC 3339
    /// rate-limit reset) from `now`.
    pub fn from_headers(headers: &HeaderMap, now: SystemTime) -> Self {
        Self::read(headers, || now)
    }

    /// [`from_headers`](Self::from_headers), measuring dates from
    /// [`wall_clock`](hint::wall_clock), which is read only when a `Retry-After` or an RFC 3339
    /// reset is present.
    pub(crate) fn from_headers_wall_clock(headers: &HeaderMap) -> Self {
        Self::read(headers, hint::wall_clock)
    }

    /// The hints in `headers`, dates measured from `now()` (called only when a header that may
    /// hold a date is present).
    fn read(headers: &HeaderMap, now: impl Fn() -> SystemTime) -> Self {
        // Present but not visible ASCII is malformed too: "do not retry", as A6 has it.
        let pushback = headers.get(GRPC_RETRY_PUSHBACK_MS).map(|v| {
            v.to_str()
                .map_or(Pushback::DoNotRetry, hint::grpc_retry_pushback_ms)
        });
        let retry_after = text(headers, RETRY_AFTER_MS)
            .and_then(hint::retry_after_ms)
            .or_else(|| {
                text(headers, RETRY_AFTER.as_str()).and_then(|v| hint::retry_after(v, now()))
            })
            .or(match pushback {
                Some(Pushback::After(d)) => Some(d),
                _ => None,
            });
        let (rate_limit_reset, rate_limit_exhausted) = resets(headers, &now);
        ServerHints {
            retry_after,
            should_retry: text(headers, X_SHOULD_RETRY).and_then(hint::should_retry),
            pushback,
            rate_limit_reset,
            rate_limit_exhausted,
        }
    }

    /// [`from_headers`](Self::from_headers), measuring dates from the response's own `Date`
    /// header when it has a valid one (the server's clock: immune to skew between the two
    /// machines), else from [`wall_clock`](hint::wall_clock).
    pub fn from_headers_server_clock(headers: &HeaderMap) -> Self {
        Self::read(headers, || server_clock(headers))
    }

    /// Whether no header said anything.
    pub fn is_empty(&self) -> bool {
        *self == ServerHints::default()
    }
}

/// The value of header `name` as text, if present and visible ASCII.
pub(crate) fn text<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// The response's `Date` header, if valid, else [`wall_clock`](hint::wall_clock).
fn server_clock(headers: &HeaderMap) -> SystemTime {
    text(headers, DATE.as_str())
        .and_then(|d| httpdate::parse_http_date(d).ok())
        .unwrap_or_else(hint::wall_clock)
}

/// The reset of the exhausted rate limit, from the headers of [`RATE_LIMITS`]
/// (`x-ratelimit-reset-*` durations, `anthropic-ratelimit-*-reset` dates, measured from
/// `now`): the longest reset among the limits whose remaining header is `0`; when none says
/// so, the soonest of the resets given (a retry that meets the limit again costs one attempt
/// and brings fresh headers; waiting for the latest may wait minutes for nothing). A reset
/// that does not parse is ignored.
///
/// ```
/// use http::HeaderMap;
/// use palisade_http::hint::rate_limit_reset;
/// use std::time::{Duration, SystemTime};
///
/// let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_704_067_200); // 2024-01-01T00:00:00Z
/// let mut headers = HeaderMap::new();
/// headers.insert("anthropic-ratelimit-requests-reset", "2024-01-01T00:00:05Z".parse().unwrap());
/// headers.insert("anthropic-ratelimit-tokens-reset", "2024-01-01T00:01:00Z".parse().unwrap());
/// headers.insert("anthropic-ratelimit-tokens-remaining", "0".parse().unwrap());
/// assert_eq!(rate_limit_reset(&headers, now), Some(Duration::from_secs(60)));
/// ```
pub fn rate_limit_reset(headers: &HeaderMap, now: SystemTime) -> Option<Duration> {
    resets(headers, &|| now).0
}

/// [`rate_limit_reset`], the clock read (once) only for a date, and whether the reset is an
/// exhausted limit's.
fn resets(headers: &HeaderMap, now: &dyn Fn() -> SystemTime) -> (Option<Duration>, bool) {
    let mut clock = None;
    let mut exhausted: Option<Duration> = None;
    let mut soonest: Option<Duration> = None;
    for &(reset, remaining, format) in RATE_LIMITS {
        let Some(value) = text(headers, reset) else {
            continue;
        };
        let wait = match format {
            ResetFormat::Duration => reset_duration(value),
            ResetFormat::Date => reset_date(value, *clock.get_or_insert_with(now)),
        };
        let Some(wait) = wait else {
            continue;
        };
        if text(headers, remaining).is_some_and(|v| v.trim() == "0") {
            exhausted = exhausted.max(Some(wait));
        }
        soonest = Some(soonest.map_or(wait, |s| s.min(wait)));
    }
    match exhausted {
        Some(wait) => (Some(wait), true),
        None => (soonest, false),
    }
}

/// Parses an RFC 3339 date, as Anthropic's `anthropic-ratelimit-*-reset` headers carry it
/// (`2024-01-01T00:00:30Z`, with any fraction of a second, `Z` or a numeric offset such as
/// `+01:00`, `T`/`Z` in either case), into the time from `now` until then: zero for a date in
/// the past, at most [`LONGEST`]. Anything else is `None`. The date is read with
/// [`humantime::parse_rfc3339`].
pub fn reset_date(value: &str, now: SystemTime) -> Option<Duration> {
    // humantime reads `T` and `Z` in upper case (a date has no other letters).
    let v = value.trim().to_ascii_uppercase();
    let (utc, offset) = match v.as_bytes() {
        [.., sign @ (b'+' | b'-'), h1, h2, b':', m1, m2]
            if [h1, h2, m1, m2].iter().all(|b| b.is_ascii_digit()) =>
        {
            let digit = |b: &u8| u64::from(b - b'0');
            let (hours, minutes) = (digit(h1) * 10 + digit(h2), digit(m1) * 10 + digit(m2));
            // RFC 3339's `time-hour` is 00-23 and `time-minute` 00-59.
            if hours > 23 || minutes > 59 {
                return None;
            }
            let minutes = hours * 60 + minutes;
            // The offset's six bytes are ASCII: the rest ends on a character boundary.
            let local = &v[..v.len() - 6];
            let seconds = Duration::from_secs(minutes * 60);
            (format!("{local}Z"), Some((*sign == b'+', seconds)))
        }
        _ => (v, None),
    };
    let at = humantime::parse_rfc3339(&utc).ok()?;
    // The local time is ahead of UTC by a positive offset: UTC = local − offset.
    let at = match offset {
        Some((true, d)) => at.checked_sub(d)?,
        Some((false, d)) => at.checked_add(d)?,
        None => at,
    };
    Some(
        at.duration_since(now)
            .unwrap_or(Duration::ZERO)
            .min(LONGEST),
    )
}

/// Parses a duration as Go's `time.Duration` prints it (and as OpenAI's and Groq's
/// `x-ratelimit-reset-*` headers carry it): one or more decimal numbers, each with a unit
/// (`ns`, `us`, `µs`, `ms`, `s`, `m`, `h`): `1s`, `6m0s`, `20ms`, `1h2m3.5s`, `0.5s`, or a bare
/// `0`.
///
/// Exact to the nanosecond; longer than [`LONGEST`] saturates to it; a sign, a missing unit,
/// an unknown unit or anything else is `None`.
pub fn reset_duration(value: &str) -> Option<Duration> {
    let v = value.trim();
    if v == "0" {
        return Some(Duration::ZERO);
    }
    if v.is_empty() {
        return None;
    }
    let longest = LONGEST.as_nanos();
    let mut total: u128 = 0;
    let mut rest = v;
    while !rest.is_empty() {
        // The number: digits, optionally a fraction.
        let int_len = rest.bytes().take_while(u8::is_ascii_digit).count();
        let (int, after) = rest.split_at(int_len);
        let (frac, after) = match after.strip_prefix('.') {
            Some(f) => {
                let n = f.bytes().take_while(u8::is_ascii_digit).count();
                f.split_at(n)
            }
            None => ("", after),
        };
        if int.is_empty() && frac.is_empty() {
            return None;
        }
        // The unit: letters up to the next digit or dot.
        let unit_len = after
            .char_indices()
            .find(|(_, c)| c.is_ascii_digit() || *c == '.')
            .map_or(after.len(), |(i, _)| i);
        let (unit, next) = after.split_at(unit_len);
        let unit: u128 = match unit {
            "ns" => 1,
            "us" | "µs" | "μs" => 1_000,
            "ms" => 1_000_000,
            "s" => 1_000_000_000,
            "m" => 60_000_000_000,
            "h" => 3_600_000_000_000,
            _ => return None,
        };
        let whole = match int {
            "" => 0,
            digits => digits
                .parse::<u128>()
                .map_or(u128::MAX, |n| n.saturating_mul(unit)),
        };
        // Eighteen fractional digits are finer than a nanosecond of any unit.
        let digits = &frac[..frac.len().min(18)];
        let part = match digits.parse::<u128>() {
            Ok(n) => n * unit / 10u128.pow(digits.len() as u32),
            Err(_) => 0,
        };
        total = total.saturating_add(whole).saturating_add(part);
        rest = next;
    }
    let nanos = total.min(longest);
    Some(Duration::new(
        (nanos / 1_000_000_000) as u64,
        (nanos % 1_000_000_000) as u32,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        h
    }

    const EPOCH: SystemTime = SystemTime::UNIX_EPOCH;
    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn go_durations() {
        for (text, want) in [
            ("0", Duration::ZERO),
            ("1s", Duration::from_secs(1)),
            ("6m0s", Duration::from_secs(360)),
            ("20ms", ms(20)),
            ("1h2m3.5s", ms(3_723_500)),
            ("0.5s", ms(500)),
            (".5s", ms(500)),
            ("5.s", Duration::from_secs(5)),
            ("2m59.56s", ms(179_560)),
            ("7.66s", ms(7_660)),
            ("1.5h", Duration::from_secs(5400)),
            ("100us", Duration::from_micros(100)),
            ("100µs", Duration::from_micros(100)),
            ("3ns", Duration::from_nanos(3)),
            (" 1s ", Duration::from_secs(1)),
            ("1h1h", Duration::from_secs(7200)),
            ("1.000000000000000000001s", Duration::from_secs(1)),
        ] {
            assert_eq!(reset_duration(text), Some(want), "{text:?}");
        }
        assert_eq!(reset_duration("999999999h"), Some(LONGEST));
        assert_eq!(
            reset_duration(&format!("{}s", "9".repeat(60))),
            Some(LONGEST)
        );
        for bad in [
            "", " ", "1", "20", "-1s", "+1s", "1x", "s", "1 s", "1.2.3s", ".s", "1sm", "NaN",
            "1e3s", "ms", "1m-2s",
        ] {
            assert_eq!(reset_duration(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn retry_after_ms_is_preferred() {
        let h = headers(&[("retry-after-ms", "250"), ("retry-after", "3")]);
        assert_eq!(
            ServerHints::from_headers(&h, EPOCH).retry_after,
            Some(ms(250))
        );
        let h = headers(&[("retry-after-ms", "nonsense"), ("retry-after", "3")]);
        assert_eq!(
            ServerHints::from_headers(&h, EPOCH).retry_after,
            Some(Duration::from_secs(3))
        );
    }

    #[test]
    fn retry_after_dates_against_now_or_the_date_header() {
        let now = httpdate::parse_http_date("Wed, 21 Oct 2015 07:28:00 GMT").unwrap();
        let h = headers(&[("retry-after", "Wed, 21 Oct 2015 07:28:10 GMT")]);
        assert_eq!(
            ServerHints::from_headers(&h, now).retry_after,
            Some(Duration::from_secs(10))
        );
        let h = headers(&[
            ("retry-after", "Wed, 21 Oct 2015 07:28:10 GMT"),
            ("date", "Wed, 21 Oct 2015 07:28:04 GMT"),
        ]);
        assert_eq!(
            ServerHints::from_headers_server_clock(&h).retry_after,
            Some(Duration::from_secs(6))
        );
        // A Date header that is not a date: the wall clock (2015 is long past: no wait).
        let h = headers(&[
            ("retry-after", "Wed, 21 Oct 2015 07:28:10 GMT"),
            ("date", "12"),
        ]);
        assert_eq!(
            ServerHints::from_headers_server_clock(&h).retry_after,
            Some(Duration::ZERO)
        );
    }

    #[test]
    fn should_retry_and_pushback() {
        let h = headers(&[("x-should-retry", "false")]);
        let hints = ServerHints::from_headers(&h, EPOCH);
        assert_eq!(hints.should_retry, Some(false));
        assert_eq!(hints.retry_after, None);
        assert!(!hints.is_empty());
        let h = headers(&[("x-should-retry", "maybe")]);
        assert!(ServerHints::from_headers(&h, EPOCH).is_empty());

        let h = headers(&[("grpc-retry-pushback-ms", "120")]);
        let hints = ServerHints::from_headers(&h, EPOCH);
        assert_eq!(hints.retry_after, Some(ms(120)));
        assert_eq!(hints.pushback, Some(Pushback::After(ms(120))));
        let h = headers(&[("grpc-retry-pushback-ms", "-1")]);
        let hints = ServerHints::from_headers(&h, EPOCH);
        assert_eq!(hints.retry_after, None);
        assert_eq!(hints.pushback, Some(Pushback::DoNotRetry));
    }

    #[test]
    fn rate_limit_resets() {
        // The exhausted limit's reset, even when it is the later one.
        let h = headers(&[
            ("x-ratelimit-reset-requests", "1s"),
            ("x-ratelimit-reset-tokens", "6m0s"),
            ("x-ratelimit-remaining-requests", "12"),
            ("x-ratelimit-remaining-tokens", "0"),
        ]);
        assert_eq!(rate_limit_reset(&h, EPOCH), Some(Duration::from_secs(360)));
        let h = headers(&[
            ("x-ratelimit-reset-requests", "20ms"),
            ("x-ratelimit-reset-tokens", "6m0s"),
            ("x-ratelimit-remaining-requests", "0"),
        ]);
        assert_eq!(rate_limit_reset(&h, EPOCH), Some(ms(20)));
        // Nobody says which: the sooner.
        let h = headers(&[
            ("x-ratelimit-reset-requests", "1h2m3.5s"),
            ("x-ratelimit-reset-tokens", "1s"),
        ]);
        assert_eq!(rate_limit_reset(&h, EPOCH), Some(Duration::from_secs(1)));
        // Malformed ones are ignored.
        let h = headers(&[
            ("x-ratelimit-reset-requests", "soon"),
            ("x-ratelimit-reset-tokens", "2s"),
            ("x-ratelimit-remaining-requests", "0"),
        ]);
        assert_eq!(rate_limit_reset(&h, EPOCH), Some(Duration::from_secs(2)));
        assert_eq!(rate_limit_reset(&HeaderMap::new(), EPOCH), None);
    }

    /// 2024-01-01T00:00:00Z.
    fn new_year() -> SystemTime {
        EPOCH + Duration::from_secs(1_704_067_200)
    }

    #[test]
    fn rfc_3339_dates() {
        let now = new_year();
        for (text, want) in [
            ("2024-01-01T00:00:30Z", Duration::from_secs(30)),
            ("2024-01-01T00:00:00.250Z", ms(250)),
            ("2024-01-01T00:00:00.000000001Z", Duration::from_nanos(1)),
            ("2024-01-01T00:01:00+00:00", Duration::from_secs(60)),
            ("2024-01-01t00:00:30z", Duration::from_secs(30)),
            (" 2024-01-01T00:00:30Z ", Duration::from_secs(30)),
            // Local times with an offset: UTC is local minus the offset.
            ("2024-01-01T01:00:30+01:00", Duration::from_secs(30)),
            ("2023-12-31T23:30:30-00:30", Duration::from_secs(30)),
            ("2024-01-01T05:45:07.5+05:45", ms(7_500)),
            // A leap second reads as :59.
            ("2024-01-01T00:00:60Z", Duration::from_secs(59)),
            // Past: no wait.
            ("2023-12-31T23:59:59Z", Duration::ZERO),
            ("1970-01-01T00:00:00Z", Duration::ZERO),
            ("2024-01-01T00:00:30+23:59", Duration::ZERO),
            // Far away: the longest wait.
            ("9999-12-31T23:59:59Z", LONGEST),
        ] {
            assert_eq!(reset_date(text, now), Some(want), "{text:?}");
        }
        for bad in [
            "",
            "6m0s",
            "30",
            "2024-01-01",
            "2024-01-01T00:00:30",
            "2024-01-01 00:00:30Z",
            "2024-13-01T00:00:00Z",
            "2024-02-30T00:00:00Z",
            "2024-01-01T24:00:00Z",
            "2024-01-01T00:00:30+24:00",
            "2024-01-01T00:00:30+01",
            "2024-01-01T00:00:30+0100",
            "2024-01-01T00:00:30+/0:00",
            "2024-01-01T00:00:30+01:0/",
            "2024-01-01T00:00:30.Z+01:00",
            "1969-12-31T23:59:59Z",
            "Mon, 01 Jan 2024 00:00:30 GMT",
            "2024-01-01T00:00:30Zé",
            "é024-01-01T00:00:30+01:00",
        ] {
            assert_eq!(reset_date(bad, now), None, "{bad:?}");
        }
    }

    /// RFC 3339's offset is `time-hour ":" time-minute`, each in its range (00-23, 00-59): an
    /// offset whose minutes are 60 or more is malformed, not that many minutes.
    #[test]
    fn an_offset_with_minutes_out_of_range_is_not_a_date() {
        let now = new_year();
        for bad in [
            "2024-01-01T01:15:30+00:75",
            "2024-01-01T00:00:30+05:60",
            "2024-01-01T00:00:30-00:99",
        ] {
            assert_eq!(reset_date(bad, now), None, "{bad:?}");
        }
        // The largest offsets that are well formed.
        assert_eq!(
            reset_date("2024-01-01T23:59:30+23:59", now),
            Some(Duration::from_secs(30))
        );
        assert_eq!(
            reset_date("2023-12-31T00:01:30-23:59", now),
            Some(Duration::from_secs(30))
        );
    }

    #[test]
    fn anthropic_resets() {
        let now = new_year();
        // The exhausted limit's reset, even when it is the later one.
        let h = headers(&[
            ("anthropic-ratelimit-requests-reset", "2024-01-01T00:00:05Z"),
            ("anthropic-ratelimit-requests-remaining", "41"),
            (
                "anthropic-ratelimit-output-tokens-reset",
                "2024-01-01T00:00:50Z",
            ),
            ("anthropic-ratelimit-output-tokens-remaining", "0"),
        ]);
        assert_eq!(rate_limit_reset(&h, now), Some(Duration::from_secs(50)));
        // Two exhausted: the later, since both must reset.
        let h = headers(&[
            (
                "anthropic-ratelimit-input-tokens-reset",
                "2024-01-01T00:00:20Z",
            ),
            ("anthropic-ratelimit-input-tokens-remaining", "0"),
            ("anthropic-ratelimit-tokens-reset", "2024-01-01T00:00:40Z"),
            ("anthropic-ratelimit-tokens-remaining", " 0 "),
        ]);
        assert_eq!(rate_limit_reset(&h, now), Some(Duration::from_secs(40)));
        // Nobody says which: the soonest; a malformed one is ignored, and so is its remaining
        // count.
        let h = headers(&[
            ("anthropic-ratelimit-requests-reset", "tomorrow"),
            ("anthropic-ratelimit-requests-remaining", "0"),
            ("anthropic-ratelimit-tokens-reset", "2024-01-01T00:00:09Z"),
            (
                "anthropic-ratelimit-input-tokens-reset",
                "2024-01-01T00:00:03Z",
            ),
        ]);
        assert_eq!(rate_limit_reset(&h, now), Some(Duration::from_secs(3)));
        // Durations and dates together (a proxy in front of both kinds of API).
        let h = headers(&[
            ("x-ratelimit-reset-requests", "2s"),
            ("anthropic-ratelimit-requests-reset", "2024-01-01T00:00:01Z"),
        ]);
        assert_eq!(rate_limit_reset(&h, now), Some(Duration::from_secs(1)));
        let h = headers(&[
            ("x-ratelimit-reset-requests", "2s"),
            ("x-ratelimit-remaining-requests", "0"),
            ("anthropic-ratelimit-requests-reset", "2024-01-01T00:00:01Z"),
        ]);
        assert_eq!(rate_limit_reset(&h, now), Some(Duration::from_secs(2)));
        let h = headers(&[
            ("anthropic-ratelimit-requests-reset", "2024-01-01T00:00:01Z"),
            ("anthropic-ratelimit-requests-remaining", "1"),
        ]);
        assert_eq!(rate_limit_reset(&h, now), Some(Duration::from_secs(1)));
    }

    #[test]
    fn anthropic_resets_against_the_date_header() {
        let h = headers(&[
            ("date", "Mon, 01 Jan 2024 00:00:00 GMT"),
            ("anthropic-ratelimit-requests-reset", "2024-01-01T00:00:12Z"),
            ("anthropic-ratelimit-requests-remaining", "0"),
        ]);
        assert_eq!(
            ServerHints::from_headers_server_clock(&h).rate_limit_reset,
            Some(Duration::from_secs(12))
        );
        // Given a `now`, the `Date` header is not read.
        assert_eq!(
            ServerHints::from_headers(&h, new_year() + Duration::from_secs(2)).rate_limit_reset,
            Some(Duration::from_secs(10))
        );
        // Without a valid `Date`, the wall clock: 2024 is long past.
        let h = headers(&[
            ("date", "yesterday"),
            ("anthropic-ratelimit-requests-reset", "2024-01-01T00:00:12Z"),
        ]);
        assert_eq!(
            ServerHints::from_headers_server_clock(&h).rate_limit_reset,
            Some(Duration::ZERO)
        );
    }

    #[tokio::test(start_paused = true)]
    async fn anthropic_resets_follow_the_paused_clock() {
        let at =
            humantime::format_rfc3339(hint::wall_clock() + Duration::from_secs(30)).to_string();
        let h = headers(&[("anthropic-ratelimit-tokens-reset", &at)]);
        let first = ServerHints::from_headers_wall_clock(&h)
            .rate_limit_reset
            .unwrap();
        // The wall clock reads two clocks: a nanosecond either way is their drift.
        assert!(first.abs_diff(Duration::from_secs(30)) < ms(1), "{first:?}");
        tokio::time::advance(Duration::from_secs(20)).await;
        let later = ServerHints::from_headers_wall_clock(&h)
            .rate_limit_reset
            .unwrap();
        // The wall clock is read twice: allow it the real time between the reads.
        let moved = first - later;
        assert!(moved.abs_diff(Duration::from_secs(20)) < ms(1), "{moved:?}");
    }

    #[test]
    fn opaque_header_bytes_are_ignored() {
        let mut h = HeaderMap::new();
        h.insert(
            "retry-after-ms",
            http::HeaderValue::from_bytes(b"\xff12").unwrap(),
        );
        assert!(ServerHints::from_headers(&h, EPOCH).is_empty());
    }

    /// Except a pushback's: present but unreadable is malformed, and A6 reads a malformed
    /// pushback as "do not retry".
    #[test]
    fn an_opaque_pushback_means_do_not_retry() {
        let mut h = HeaderMap::new();
        h.insert(
            GRPC_RETRY_PUSHBACK_MS,
            http::HeaderValue::from_bytes(b"\xff100").unwrap(),
        );
        let hints = ServerHints::from_headers(&h, EPOCH);
        assert_eq!(hints.pushback, Some(Pushback::DoNotRetry));
        assert_eq!(hints.retry_after, None);
        assert_eq!(ServerHints::from_headers_wall_clock(&h), hints);
        assert_eq!(ServerHints::from_headers_server_clock(&h), hints);
    }

    proptest! {
        #[test]
        fn parsers_never_panic(value in "\\PC{0,40}", bytes in proptest::collection::vec(any::<u8>(), 0..40)) {
            if let Some(d) = reset_duration(&value) { prop_assert!(d <= LONGEST); }
            if let Some(d) = reset_date(&value, EPOCH) { prop_assert!(d <= LONGEST); }
            let mut h = HeaderMap::new();
            for name in [RETRY_AFTER_MS, "retry-after", X_SHOULD_RETRY, GRPC_RETRY_PUSHBACK_MS,
                X_RATELIMIT_RESET_REQUESTS, X_RATELIMIT_RESET_TOKENS, X_RATELIMIT_REMAINING_TOKENS,
                "anthropic-ratelimit-tokens-reset", "anthropic-ratelimit-tokens-remaining", "date"] {
                if let Ok(v) = http::HeaderValue::from_str(&value) { h.append(name, v); }
                if let Ok(v) = http::HeaderValue::from_bytes(&bytes) { h.append(name, v); }
            }
            let hints = ServerHints::from_headers(&h, EPOCH);
            if let Some(d) = hints.retry_after { prop_assert!(d <= LONGEST); }
            if let Some(d) = hints.rate_limit_reset { prop_assert!(d <= LONGEST); }
            let _ = ServerHints::from_headers_server_clock(&h);
        }

        #[test]
        fn rfc_3339_dates_round_trip(secs in 0u64..253_402_300_799, nanos in 0u32..1_000_000_000) {
            let at = EPOCH + Duration::new(secs, nanos);
            let text = humantime::format_rfc3339_nanos(at).to_string();
            prop_assert_eq!(reset_date(&text, EPOCH), Some(Duration::new(secs, nanos).min(LONGEST)));
            prop_assert_eq!(reset_date(&text, at), Some(Duration::ZERO));
        }

        #[test]
        fn go_durations_round_trip(h in 0u64..1000, m in 0u64..60, s in 0u64..60, millis in 0u64..1000) {
            let text = format!("{h}h{m}m{s}.{millis:03}s");
            let want = Duration::from_secs(h * 3600 + m * 60 + s) + Duration::from_millis(millis);
            prop_assert_eq!(reset_duration(&text), Some(want));
        }
    }
}
