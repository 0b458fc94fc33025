//! Server hints read from response headers: how long to wait, and whether to retry at all.
//!
//! [`ServerHints::from_headers`] reads every header below, through the shared parsers of
//! [`palisade_classify::hint`] (one parser per format across palisade), plus the rate-limit
//! reset durations of LLM APIs, parsed here by [`reset_duration`].
//!
//! | header | meaning | read as |
//! |---|---|---|
//! | `retry-after-ms` | milliseconds to wait (OpenAI's and Anthropic's APIs send it with 429 and 503) | preferred over `Retry-After` when both are present, being finer |
//! | `Retry-After` | delta-seconds or an HTTP-date ([RFC 9110 §10.2.3](https://www.rfc-editor.org/rfc/rfc9110#section-10.2.3)) | a date is measured from [`wall_clock`](palisade_classify::hint::wall_clock) (tokio's clock, so paused-clock tests cover it), or from the response's own `Date` header when asked |
//! | `grpc-retry-pushback-ms` | gRPC's server pushback ([gRPC A6](https://github.com/grpc/proposal/blob/master/A6-client-retries.md)): milliseconds, or negative for "do not retry" | a malformed value means "do not retry", as A6 specifies |
//! | `x-should-retry` | `true` / `false`: the server's own verdict (OpenAI's and Anthropic's APIs) | overrides whether the failure is retryable, either way |
//! | `x-ratelimit-reset-requests`, `x-ratelimit-reset-tokens` | when a rate-limit window resets, as a duration such as `1s`, `6m0s`, `20ms`, `1h2m3.5s` (OpenAI's and Groq's APIs) | read only for a rate-limited response, when nothing above gave a wait: the reset of the exhausted limit (`x-ratelimit-remaining-*: 0`), else the sooner of the two |
//!
//! A value that does not parse is ignored (never a panic); so is a header whose bytes are not
//! visible ASCII. Waits come back as sent, up to [`LONGEST`]: whether a wait is too long is the
//! retry layer's decision (its `max_retry_after`), not the parser's.
//!
//! ```
//! use http::HeaderMap;
//! use palisade_http::hint::{ServerHints, reset_duration};
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
//! ```

use std::time::{Duration, SystemTime};

use http::HeaderMap;
use http::header::{DATE, RETRY_AFTER};
use palisade_classify::hint::{self, LONGEST, Pushback};

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

/// What a response's headers say about retrying it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ServerHints {
    /// How long the server asked the caller to wait: `retry-after-ms`, else `Retry-After`, else
    /// a `grpc-retry-pushback-ms` delay.
    pub retry_after: Option<Duration>,
    /// `x-should-retry`, when present and `true` or `false`.
    pub should_retry: Option<bool>,
    /// `grpc-retry-pushback-ms`, when present.
    pub pushback: Option<Pushback>,
    /// When the exhausted rate-limit window resets (`x-ratelimit-reset-*`; see the
    /// [module docs](self)); read apart from `retry_after` because it only means "wait" for a
    /// rate-limited response.
    pub rate_limit_reset: Option<Duration>,
}

impl ServerHints {
    /// Reads the hints in `headers`, measuring an HTTP-date `Retry-After` from `now`.
    pub fn from_headers(headers: &HeaderMap, now: SystemTime) -> Self {
        Self::read(headers, |v| hint::retry_after(v, now))
    }

    /// [`from_headers`](Self::from_headers), measuring an HTTP-date `Retry-After` from
    /// [`wall_clock`](hint::wall_clock), which is read only when there is such a header to
    /// measure.
    pub(crate) fn from_headers_wall_clock(headers: &HeaderMap) -> Self {
        Self::read(headers, hint::retry_after_now)
    }

    /// The hints in `headers`, `Retry-After` read by `retry_after` (called only when that
    /// header is present and `retry-after-ms` did not give the wait).
    fn read(headers: &HeaderMap, retry_after: impl FnOnce(&str) -> Option<Duration>) -> Self {
        let pushback = text(headers, GRPC_RETRY_PUSHBACK_MS).map(hint::grpc_retry_pushback_ms);
        let retry_after = text(headers, RETRY_AFTER_MS)
            .and_then(hint::retry_after_ms)
            .or_else(|| text(headers, RETRY_AFTER.as_str()).and_then(retry_after))
            .or(match pushback {
                Some(Pushback::After(d)) => Some(d),
                _ => None,
            });
        ServerHints {
            retry_after,
            should_retry: text(headers, X_SHOULD_RETRY).and_then(hint::should_retry),
            pushback,
            rate_limit_reset: rate_limit_reset(headers),
        }
    }

    /// [`from_headers`](Self::from_headers), measuring an HTTP-date `Retry-After` from the
    /// response's own `Date` header when it has a valid one (the server's clock: immune to skew
    /// between the two machines), else from [`wall_clock`](hint::wall_clock).
    pub fn from_headers_server_clock(headers: &HeaderMap) -> Self {
        Self::read(headers, |v| {
            match text(headers, DATE.as_str()).and_then(|d| httpdate::parse_http_date(d).ok()) {
                Some(date) => hint::retry_after(v, date),
                None => hint::retry_after_now(v),
            }
        })
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

/// The reset of the exhausted rate limit, from `x-ratelimit-reset-requests` and
/// `x-ratelimit-reset-tokens`: the longest reset among the limits whose
/// `x-ratelimit-remaining-*` is `0`; when none says so, the sooner of the resets given (a retry
/// that meets the limit again costs one attempt and brings fresh headers; waiting for the
/// later one may wait minutes for nothing).
pub fn rate_limit_reset(headers: &HeaderMap) -> Option<Duration> {
    let requests = text(headers, X_RATELIMIT_RESET_REQUESTS).and_then(reset_duration);
    let tokens = text(headers, X_RATELIMIT_RESET_TOKENS).and_then(reset_duration);
    let exhausted = |name| text(headers, name).is_some_and(|v| v.trim() == "0");
    let exhausted = [
        requests.filter(|_| exhausted(X_RATELIMIT_REMAINING_REQUESTS)),
        tokens.filter(|_| exhausted(X_RATELIMIT_REMAINING_TOKENS)),
    ]
    .into_iter()
    .flatten()
    .max();
    exhausted.or_else(|| [requests, tokens].into_iter().flatten().min())
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
        assert_eq!(rate_limit_reset(&h), Some(Duration::from_secs(360)));
        let h = headers(&[
            ("x-ratelimit-reset-requests", "20ms"),
            ("x-ratelimit-reset-tokens", "6m0s"),
            ("x-ratelimit-remaining-requests", "0"),
        ]);
        assert_eq!(rate_limit_reset(&h), Some(ms(20)));
        // Nobody says which: the sooner.
        let h = headers(&[
            ("x-ratelimit-reset-requests", "1h2m3.5s"),
            ("x-ratelimit-reset-tokens", "1s"),
        ]);
        assert_eq!(rate_limit_reset(&h), Some(Duration::from_secs(1)));
        // Malformed ones are ignored.
        let h = headers(&[
            ("x-ratelimit-reset-requests", "soon"),
            ("x-ratelimit-reset-tokens", "2s"),
            ("x-ratelimit-remaining-requests", "0"),
        ]);
        assert_eq!(rate_limit_reset(&h), Some(Duration::from_secs(2)));
        assert_eq!(rate_limit_reset(&HeaderMap::new()), None);
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

    proptest! {
        #[test]
        fn parsers_never_panic(value in "\\PC{0,40}", bytes in proptest::collection::vec(any::<u8>(), 0..40)) {
            if let Some(d) = reset_duration(&value) { prop_assert!(d <= LONGEST); }
            let mut h = HeaderMap::new();
            for name in [RETRY_AFTER_MS, "retry-after", X_SHOULD_RETRY, GRPC_RETRY_PUSHBACK_MS,
                X_RATELIMIT_RESET_REQUESTS, X_RATELIMIT_RESET_TOKENS, X_RATELIMIT_REMAINING_TOKENS, "date"] {
                if let Ok(v) = http::HeaderValue::from_str(&value) { h.append(name, v); }
                if let Ok(v) = http::HeaderValue::from_bytes(&bytes) { h.append(name, v); }
            }
            let hints = ServerHints::from_headers(&h, EPOCH);
            if let Some(d) = hints.retry_after { prop_assert!(d <= LONGEST); }
            let _ = ServerHints::from_headers_server_clock(&h);
        }

        #[test]
        fn go_durations_round_trip(h in 0u64..1000, m in 0u64..60, s in 0u64..60, millis in 0u64..1000) {
            let text = format!("{h}h{m}m{s}.{millis:03}s");
            let want = Duration::from_secs(h * 3600 + m * 60 + s) + Duration::from_millis(millis);
            prop_assert_eq!(reset_duration(&text), Some(want));
        }
    }
}
