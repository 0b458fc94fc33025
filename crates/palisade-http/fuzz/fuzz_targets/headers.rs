//! Arbitrary bytes through every header parser of palisade-http and palisade-core's
//! hints, and through the classifiers' header paths: none may panic, and every wait stays
//! within `LONGEST`.
//!
//! The input: two bytes of HTTP status, then header values separated by `\n`, given in turn
//! to the names in `NAMES` (so one input sets several headers, some of them twice). Each
//! value also goes to the string parsers directly, as text (lossy UTF-8).

#![no_main]

use std::time::{Duration, SystemTime};

use http::{HeaderMap, HeaderName, HeaderValue, Response, StatusCode};
use libfuzzer_sys::fuzz_target;
use palisade_core::hint::{self, LONGEST};
use palisade_core::{BoxError, Classify};
use palisade_http::HttpClassifier;
use palisade_http::deadline::ServerDeadlineLayer;
use palisade_http::grpc::{self, Code, GrpcClassifier, GrpcStatus};
use palisade_http::hint::{RATE_LIMITS, ServerHints, rate_limit_reset, reset_date, reset_duration};

/// Every header a parser reads, besides the rate limits' (`RATE_LIMITS`).
const NAMES: &[&str] = &[
    "retry-after",
    "retry-after-ms",
    "x-should-retry",
    "grpc-retry-pushback-ms",
    "date",
    "grpc-status",
    "grpc-message",
    "grpc-timeout",
    "x-request-timeout-ms",
];

/// The name of the `i`-th header of an input: `NAMES`, then each rate limit's reset and
/// remaining headers, in turn.
fn name(i: usize) -> HeaderName {
    let limits = RATE_LIMITS.len() * 2;
    let i = i % (NAMES.len() + limits);
    let name = match NAMES.get(i) {
        Some(name) => name,
        None => {
            let (reset, remaining, _) = RATE_LIMITS[(i - NAMES.len()) / 2];
            if (i - NAMES.len()).is_multiple_of(2) {
                reset
            } else {
                remaining
            }
        }
    };
    HeaderName::from_static(name)
}

fn within(d: Option<Duration>) {
    if let Some(d) = d {
        assert!(d <= LONGEST, "{d:?}");
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((status, rest)) = data.split_first_chunk::<2>() else {
        return;
    };
    let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
    let mut headers = HeaderMap::new();
    for (i, value) in rest.split(|&b| b == b'\n').enumerate() {
        // The string parsers, on any text.
        let text = String::from_utf8_lossy(value);
        within(hint::retry_after(&text, now));
        within(hint::retry_after(&text, SystemTime::UNIX_EPOCH));
        within(hint::retry_after_ms(&text));
        let _ = hint::should_retry(&text);
        if let hint::Pushback::After(d) = hint::grpc_retry_pushback_ms(&text) {
            within(Some(d));
        }
        within(reset_duration(&text));
        within(reset_date(&text, now));
        within(reset_date(&text, SystemTime::UNIX_EPOCH));
        let _ = Code::from_header(&text);
        if let Some(d) = grpc::parse_timeout(&text) {
            // What parses formats back to something that parses.
            assert!(grpc::parse_timeout(&grpc::format_timeout(d)).is_some());
        }
        // The header paths, on whatever bytes a header value may hold.
        if let Ok(v) = HeaderValue::from_bytes(value) {
            headers.append(name(i), v);
        }
    }

    let hints = ServerHints::from_headers(&headers, now);
    within(hints.retry_after);
    within(hints.rate_limit_reset);
    within(ServerHints::from_headers_server_clock(&headers).retry_after);
    within(rate_limit_reset(&headers, now));
    let _ = GrpcStatus::from_headers(&headers);
    let _ = ServerDeadlineLayer::new()
        .millis_header(Some(HeaderName::from_static("x-request-timeout-ms")))
        .limit_for(&headers);

    let status = StatusCode::from_u16(u16::from_be_bytes(*status) % 1000)
        .unwrap_or(StatusCode::SERVICE_UNAVAILABLE);
    let mut response = Response::new(());
    *response.status_mut() = status;
    *response.headers_mut() = headers.clone();
    let response = Ok::<_, BoxError>(response);
    for class in [
        HttpClassifier::new().classify(&response),
        HttpClassifier::builder()
            .dates_from_server_clock(true)
            .build()
            .expect("no overrides")
            .classify(&response),
        GrpcClassifier::new().classify(&response),
        GrpcClassifier::new()
            .classify_trailers(&headers)
            .map(|(c, _)| c),
    ]
    .into_iter()
    .flatten()
    {
        within(class.retry_after);
    }
    if let Ok(r) = &response {
        let _ = Classify::<_, BoxError>::describe(&HttpClassifier::new(), r);
        let _ = Classify::<_, BoxError>::describe(&GrpcClassifier::new(), r);
    }
});
