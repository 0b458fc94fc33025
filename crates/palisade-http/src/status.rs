//! [`HttpClassifier`]: the verdict on an HTTP response or a client error.

use std::borrow::Cow;
use std::error::Error;
use std::fmt;
use std::sync::Arc;

use http::{Response, StatusCode};
use palisade_core::{BoxError, Category, Class, Classify, ConfigError, DefaultClassifier};

use crate::body::BodyExcerpt;
use crate::hint::ServerHints;

/// The class of a status code by the rules of [`HttpClassifier`], without overrides or hints;
/// `None` for a success (1xx, 2xx, 3xx).
///
/// ```
/// use http::StatusCode;
/// use palisade_core::Category;
/// use palisade_http::status_class;
///
/// assert_eq!(status_class(StatusCode::OK), None);
/// assert_eq!(status_class(StatusCode::TOO_MANY_REQUESTS).unwrap().category, Category::RateLimited);
/// assert!(!status_class(StatusCode::NOT_IMPLEMENTED).unwrap().retryable);
/// ```
pub fn status_class(status: StatusCode) -> Option<Class> {
    let code = status.as_u16();
    let category = match code {
        ..400 => return None,
        408 => Category::Timeout,
        429 => Category::RateLimited,
        401 | 403 | 407 => Category::Authentication,
        404 | 410 => Category::NotFound,
        // Too Early: the server would not risk a replay of early data; RFC 8470 (section 5.2)
        // lets a client send the request again.
        425 => Category::Transient,
        // nginx's "client closed request": the caller gave up, the server did nothing wrong.
        499 => Category::Cancelled,
        400..=499 => Category::Validation,
        // Not implemented, HTTP version not supported: asking again cannot help.
        501 | 505 => return Some(Class::new(Category::ServerError).with_retryable(false)),
        // Bad gateway: a proxy could not reach, or got nonsense from, the server behind it.
        502 => Category::Network,
        504 => Category::Timeout,
        // Anthropic's API answers 529 when it is overloaded.
        529 => Category::ResourceExhausted,
        _ => Category::ServerError,
    };
    Some(Class::new(category))
}

/// `HTTP 503 Service Unavailable`: a status in a few words.
pub fn describe_status(status: StatusCode) -> Cow<'static, str> {
    match status.canonical_reason() {
        Some(reason) => Cow::Owned(format!("HTTP {} {reason}", status.as_u16())),
        None => Cow::Owned(format!("HTTP {}", status.as_u16())),
    }
}

/// Classifies `http::Response`s by status and headers, and client errors by kind.
///
/// # Statuses
///
/// | status | class |
/// |---|---|
/// | 1xx, 2xx, 3xx | success |
/// | 408 Request Timeout | `Timeout`, retryable |
/// | 429 Too Many Requests | `RateLimited`, retryable |
/// | 401, 403, 407 | `Authentication`, not retryable |
/// | 404, 410 | `NotFound`, not retryable |
/// | 425 Too Early | `Transient`, retryable ([RFC 8470](https://www.rfc-editor.org/rfc/rfc8470#section-5.2): the request may be sent again) |
/// | 499 (nginx: client closed request) | `Cancelled`, not retryable, not counted against health |
/// | other 4xx | `Validation`, not retryable |
/// | 500 and other 5xx | `ServerError`, retryable |
/// | 501 Not Implemented, 505 HTTP Version Not Supported | `ServerError`, not retryable |
/// | 502 Bad Gateway | `Network`, retryable (a proxy could not reach the server) |
/// | 503 Service Unavailable | `ServerError`, retryable |
/// | 504 Gateway Timeout | `Timeout`, retryable |
/// | 529 (Anthropic's API: overloaded) | `ResourceExhausted`, retryable |
///
/// Override any status with [`HttpClassifierBuilder::status`] (or declare it a success with
/// [`HttpClassifierBuilder::success`]).
///
/// # The body
///
/// The classifier does not read a body (it may be a stream the caller has not received
/// yet), but it reads the [`BodyExcerpt`] that [`PeekLayer`](crate::body::PeekLayer) put in
/// a failing response's extensions: the start of its body, read below the classify layer,
/// and the whole body still given to the caller. Without that layer, a 429 whose body says
/// the account's quota is spent (OpenAI's `insufficient_quota`) is a rate limit, retried as
/// any; with it, the excerpt's text goes through the message rules an error's message goes
/// through ([`DefaultClassifier::classify_message`]: palisade's default rules, or those of
/// the classifier given to [`HttpClassifierBuilder::errors`]), and what they find refines the
/// status's class (override or default) by two rules:
///
/// - **The same category**: the body can take the retries away and give a wait. OpenAI's
///   429 with `insufficient_quota`, Google's 429 for a quota per day, Bedrock's
///   `ServiceQuotaExceededException` are `RateLimited`, not retryable; a 429 whose body says
///   `Please try again in 1.8s` waits 1.8 s (unless a header says how long, below).
/// - **Another category**, for a client error (4xx) only, when the body says the request
///   cannot succeed (a class not retryable, of `Validation`, `Authentication`, `NotFound` or
///   `RateLimited`): the body's class. A body that reads as a cancellation or an ignored
///   outcome (a 409 "cannot update a cancelled order") does not take the failure out of the
///   dependency's health. A 4xx says less than the body
///   where one status stands for several failures: OpenAI answers `429` to a request larger
///   than the tokens-per-minute limit (`Request too large ... tokens per min`), which is
///   `Validation`, not retryable, and to a spent quota a `RateLimited` one.
///
/// The body never makes a failure retryable, and never changes a server error's (5xx)
/// category: a proxy's error page that mentions `invalid` or `not found` stays the 502 it is.
/// Then the headers apply as below, and have the last word: a `Retry-After` is the wait
/// whatever the body said, and `x-should-retry: true` makes even a spent quota retryable
/// (the server's own word on this request).
///
/// The failure's message quotes the excerpt after the status, on one line and at most 200
/// characters long, so that a log of the error says what the server said:
/// `HTTP 429 Too Many Requests: {"error": {"message": "You exceeded your current quota, ...`.
///
/// # Server hints
///
/// A failing response's headers refine its class (see [`hint`](crate::hint)):
/// `retry-after-ms`, `Retry-After` and `grpc-retry-pushback-ms` set
/// [`Class::retry_after`]; a negative or malformed `grpc-retry-pushback-ms` makes it not
/// retryable; for a rate-limited response without any of those, the reset of the exhausted
/// limit (`x-ratelimit-reset-requests`/`-tokens`) is the wait, and when no limit says it is
/// used up, the soonest reset given, unless the body stated a wait; `x-should-retry: true|false`
/// then decides retryability, whatever the status and the body. A successful response is a
/// success whatever its headers and body say.
///
/// # Errors
///
/// An `Err` is classified by the [`transport`](crate::transport) rules (hyper's and hyper-util's
/// errors by kind: connect, closed, timeout, protocol) and then palisade's default rules; pass
/// your own with [`HttpClassifierBuilder::errors`].
///
/// # Clone
///
/// The classify layer clones its classifier for every call: a clone is a reference-count
/// increment at most.
///
/// # Example
///
/// ```
/// use http::{Response, StatusCode};
/// use palisade_core::{BoxError, Category, Class, Classify};
/// use palisade_http::HttpClassifier;
/// use std::time::Duration;
///
/// let classifier = HttpClassifier::new();
/// let busy = Response::builder()
///     .status(429)
///     .header("retry-after-ms", "200")
///     .body(())
///     .unwrap();
/// let class = classifier.classify(&Ok::<_, BoxError>(busy)).unwrap();
/// assert_eq!(class.category, Category::RateLimited);
/// assert_eq!(class.retry_after, Some(Duration::from_millis(200)));
///
/// // A cache whose 404 is an answer, and a 409 worth retrying.
/// let classifier = HttpClassifier::builder()
///     .success(404)
///     .status(409, Class::new(Category::Transient))
///     .build()
///     .unwrap();
/// let not_found = Response::builder().status(404).body(()).unwrap();
/// assert_eq!(classifier.classify(&Ok::<_, BoxError>(not_found)), None);
/// ```
#[derive(Clone, Default)]
pub struct HttpClassifier {
    overrides: Option<Arc<[(StatusCode, Option<Class>)]>>,
    errors: Option<DefaultClassifier>,
    hints: Hints,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Hints {
    enabled: bool,
    server_clock: bool,
}

impl Default for Hints {
    fn default() -> Self {
        Hints {
            enabled: true,
            server_clock: false,
        }
    }
}

impl fmt::Debug for HttpClassifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HttpClassifier")
            .field("overrides", &self.overrides.as_deref().unwrap_or(&[]))
            .field("errors", &self.errors)
            .field("hints", &self.hints.enabled)
            .field("server_clock", &self.hints.server_clock)
            .finish()
    }
}

impl HttpClassifier {
    /// The rules in the table above, server hints read, dates measured on this process's clock.
    pub fn new() -> Self {
        Self::default()
    }

    /// A builder for overrides and options.
    pub fn builder() -> HttpClassifierBuilder {
        HttpClassifierBuilder {
            overrides: Vec::new(),
            errors: None,
            hints: Hints::default(),
        }
    }

    /// The class of a status, overrides included; `None` for a success.
    pub fn classify_status(&self, status: StatusCode) -> Option<Class> {
        if let Some(overrides) = &self.overrides
            && let Some((_, class)) = overrides.iter().find(|(s, _)| *s == status)
        {
            return *class;
        }
        status_class(status)
    }

    /// The class of a response: its status, refined by its body's [`BodyExcerpt`] if it
    /// carries one, then by its headers; `None` for a success.
    pub fn classify_response<B>(&self, response: &Response<B>) -> Option<Class> {
        let status = response.status();
        let mut class = self.classify_status(status)?;
        if let Some(excerpt) = response.extensions().get::<BodyExcerpt>() {
            class = self.refine_by_body(class, status, &excerpt.text());
        }
        if !self.hints.enabled {
            return Some(class);
        }
        let headers = response.headers();
        let hints = if self.hints.server_clock {
            ServerHints::from_headers_server_clock(headers)
        } else {
            ServerHints::from_headers_wall_clock(headers)
        };
        Some(apply_hints(class, &hints))
    }

    /// Refines `class`, the class of `status`, with what a failing response's body says
    /// (see [The body](#the-body)).
    fn refine_by_body(&self, class: Class, status: StatusCode, body: &str) -> Class {
        let said = match &self.errors {
            Some(errors) => errors.classify_message(body),
            None => crate::transport::classify_message(body),
        };
        let Some(said) = said else {
            return class;
        };
        if said.category == class.category {
            let refined = class.with_retryable(class.retryable && said.retryable);
            match (class.retry_after, said.retry_after) {
                (None, Some(after)) => refined.with_retry_after(after),
                _ => refined,
            }
        } else if status.is_client_error() && !said.retryable && cannot_succeed(said.category) {
            said
        } else {
            class
        }
    }

    /// The class of a client error: the [`transport`](crate::transport) rules, then palisade's
    /// defaults (or the classifier given to [`HttpClassifierBuilder::errors`]).
    pub fn classify_error(&self, err: &(dyn Error + 'static)) -> Class {
        match &self.errors {
            Some(errors) => errors.classify_error(err),
            None => crate::transport::classify_error(err),
        }
    }
}

/// Refines `class` with what a response's headers said (see [`HttpClassifier`]'s *Server
/// hints*).
pub fn apply_hints(mut class: Class, hints: &ServerHints) -> Class {
    if let Some(after) = hints.retry_after {
        class.retry_after = Some(after);
    } else if class.category == Category::RateLimited
        && let Some(reset) = hints.rate_limit_reset
        && (hints.rate_limit_exhausted || class.retry_after.is_none())
    {
        // The reset of a limit that is used up is the server's word; the soonest reset of
        // limits not known to be is a guess, which a wait the body stated beats (an OpenAI
        // 429 for tokens per minute whose body says `try again in 3s` while the requests
        // limit, not used up, resets in 120 ms).
        class.retry_after = Some(reset);
    }
    if hints.pushback == Some(palisade_core::hint::Pushback::DoNotRetry) {
        class.retryable = false;
    }
    if let Some(should) = hints.should_retry {
        class.retryable = should;
    }
    class
}

impl<B> Classify<Response<B>, BoxError> for HttpClassifier {
    fn classify(&self, result: &Result<Response<B>, BoxError>) -> Option<Class> {
        match result {
            Ok(response) => self.classify_response(response),
            Err(err) => Some(self.classify_error(&**err)),
        }
    }

    /// The status in a few words (`HTTP 429 Too Many Requests`), followed by the start of
    /// the body when [`PeekLayer`](crate::body::PeekLayer) read it and it has anything but
    /// whitespace: at most 200 characters, on one line, then `…` where the body goes on.
    fn describe(&self, response: &Response<B>) -> Option<Cow<'static, str>> {
        let status = describe_status(response.status());
        let quoted = response
            .extensions()
            .get::<BodyExcerpt>()
            .and_then(|excerpt| quote(&excerpt.text(), excerpt.is_complete()));
        Some(match quoted {
            Some(quoted) => Cow::Owned(format!("{status}: {quoted}")),
            None => status,
        })
    }
}

/// The most characters of a failing response's body its error's message quotes: enough for
/// a JSON error object's `message` and `code` (OpenAI's, Anthropic's, Google's), short
/// enough for a log line.
const QUOTED_CHARS: usize = 200;

/// `body` on one line, for an error's message: each run of whitespace (a JSON body's newlines
/// and indentation) as one space, control characters and the invisible ones that reorder or
/// hide text in a log line (bidirectional overrides, zero-width characters) escaped, at most
/// [`QUOTED_CHARS`] characters written (an escape counts as what it writes), then `…` when the
/// body goes on (cut here, or not `complete`). `None` when it has nothing but whitespace.
fn quote(body: &str, complete: bool) -> Option<String> {
    let mut out = String::new();
    let mut written = 0;
    for (n, word) in body.split_whitespace().enumerate() {
        if n > 0 && !append(&mut out, &mut written, std::iter::once(' ')) {
            return Some(out);
        }
        for c in word.chars() {
            let appended = if hidden_in_a_log(c) {
                append(&mut out, &mut written, c.escape_unicode())
            } else {
                append(&mut out, &mut written, std::iter::once(c))
            };
            if !appended {
                return Some(out);
            }
        }
    }
    if out.is_empty() {
        return None;
    }
    if !complete {
        out.push('…');
    }
    Some(out)
}

/// Appends `piece` to `out` if it fits in the [`QUOTED_CHARS`] left after the `written` so
/// far; otherwise the mark that the body goes on, and `false`.
fn append(
    out: &mut String,
    written: &mut usize,
    piece: impl ExactSizeIterator<Item = char>,
) -> bool {
    if *written + piece.len() > QUOTED_CHARS {
        out.push('…');
        return false;
    }
    *written += piece.len();
    out.extend(piece);
    true
}

/// Whether `c` would not show as itself in a log line: a control character, or a format
/// character that reorders or hides the text around it (bidirectional embeddings, overrides
/// and isolates, zero-width characters, the byte-order mark).
fn hidden_in_a_log(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{200B}'..='\u{200F}'
                | '\u{202A}'..='\u{202E}'
                | '\u{2060}'..='\u{2064}'
                | '\u{2066}'..='\u{2069}'
                | '\u{FEFF}'
        )
}

/// Builds an [`HttpClassifier`]; see [`HttpClassifier::builder`].
#[derive(Clone, Debug)]
pub struct HttpClassifierBuilder {
    overrides: Vec<(u16, Option<Class>)>,
    errors: Option<DefaultClassifier>,
    hints: Hints,
}

impl HttpClassifierBuilder {
    /// Status `code` gets `class` (its hints still apply), in place of the default rule.
    pub fn status(mut self, code: u16, class: Class) -> Self {
        self.overrides.push((code, Some(class)));
        self
    }

    /// Status `code` is a success (a cache's 404, a 409 that means "already done").
    pub fn success(mut self, code: u16) -> Self {
        self.overrides.push((code, None));
        self
    }

    /// The classifier for errors (default: [`transport::classifier`](crate::transport::classifier)).
    /// Build yours on [`transport::rules`](crate::transport::rules) to keep hyper's error kinds.
    pub fn errors(mut self, classifier: DefaultClassifier) -> Self {
        self.errors = Some(classifier);
        self
    }

    /// Whether failing responses' headers refine their class (default `true`).
    pub fn server_hints(mut self, enabled: bool) -> Self {
        self.hints.enabled = enabled;
        self
    }

    /// Whether an HTTP-date `Retry-After` is measured from the response's `Date` header
    /// (the server's clock, immune to clock skew; default `false`: this process's clock, which
    /// tokio's paused clock controls in tests).
    pub fn dates_from_server_clock(mut self, enabled: bool) -> Self {
        self.hints.server_clock = enabled;
        self
    }

    /// Builds the classifier.
    ///
    /// # Errors
    /// A [`ConfigError`] naming `status[i]` when an override's code is not a valid status
    /// (100 to 999), or when a code is given twice.
    pub fn build(self) -> Result<HttpClassifier, ConfigError> {
        let mut overrides: Vec<(StatusCode, Option<Class>)> = Vec::new();
        for (i, (code, class)) in self.overrides.into_iter().enumerate() {
            let status = StatusCode::from_u16(code).map_err(|_| {
                ConfigError::new(
                    format!("status[{i}]"),
                    "must be a status code from 100 to 999",
                )
            })?;
            if overrides.iter().any(|(s, _)| *s == status) {
                return Err(ConfigError::new(
                    format!("status[{i}]"),
                    format!("gives status {code} a second time"),
                ));
            }
            overrides.push((status, class));
        }
        Ok(HttpClassifier {
            overrides: (!overrides.is_empty()).then(|| overrides.into()),
            errors: self.errors,
            hints: self.hints,
        })
    }
}

/// Whether a failure of `category` says the request cannot succeed as sent, so that a client
/// error's body may name it (see *The body* in [`HttpClassifier`]'s docs): not a
/// cancellation, an ignored outcome or a local refusal, which would take the failure out of
/// the dependency's health, nor a failure of the server's side.
fn cannot_succeed(category: Category) -> bool {
    matches!(
        category,
        Category::Validation
            | Category::Authentication
            | Category::NotFound
            | Category::RateLimited
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn response(status: u16, headers: &[(&str, &str)]) -> Result<Response<()>, BoxError> {
        let mut b = Response::builder().status(status);
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        Ok(b.body(()).unwrap())
    }

    fn class(status: u16, headers: &[(&str, &str)]) -> Option<Class> {
        HttpClassifier::new().classify(&response(status, headers))
    }

    #[test]
    fn the_status_table() {
        use Category::*;
        for ok in [100, 200, 201, 204, 301, 304, 399] {
            assert_eq!(class(ok, &[]), None, "{ok}");
        }
        for (status, category, retryable) in [
            (400, Validation, false),
            (401, Authentication, false),
            (403, Authentication, false),
            (404, NotFound, false),
            (408, Timeout, true),
            (409, Validation, false),
            (410, NotFound, false),
            (413, Validation, false),
            (422, Validation, false),
            (425, Transient, true),
            (429, RateLimited, true),
            (498, Validation, false),
            (499, Cancelled, false),
            (500, ServerError, true),
            (501, ServerError, false),
            (502, Network, true),
            (503, ServerError, true),
            (504, Timeout, true),
            (505, ServerError, false),
            (507, ServerError, true),
            (529, ResourceExhausted, true),
            (599, ServerError, true),
            (600, ServerError, true),
        ] {
            let c = class(status, &[]).unwrap();
            assert_eq!((c.category, c.retryable), (category, retryable), "{status}");
            assert_eq!(c.retry_after, None);
        }
    }

    #[test]
    fn counts_against_health_as_the_category_says() {
        assert!(class(503, &[]).unwrap().counts_against_health());
        assert!(class(502, &[]).unwrap().counts_against_health());
        assert!(!class(429, &[]).unwrap().counts_against_health());
        assert!(!class(400, &[]).unwrap().counts_against_health());
        assert!(!class(401, &[]).unwrap().counts_against_health());
    }

    #[test]
    fn hints_refine_the_class() {
        let c = class(429, &[("retry-after-ms", "200")]).unwrap();
        assert_eq!(c.retry_after, Some(Duration::from_millis(200)));
        let c = class(503, &[("retry-after", "7")]).unwrap();
        assert_eq!(c.retry_after, Some(Duration::from_secs(7)));
        // x-should-retry overrides either way.
        let c = class(400, &[("x-should-retry", "true")]).unwrap();
        assert!(c.retryable);
        let c = class(503, &[("x-should-retry", "false")]).unwrap();
        assert!(!c.retryable);
        // Negative pushback: do not retry; x-should-retry still has the last word.
        assert!(
            !class(503, &[("grpc-retry-pushback-ms", "-1")])
                .unwrap()
                .retryable
        );
        assert!(
            class(
                503,
                &[("grpc-retry-pushback-ms", "-1"), ("x-should-retry", "true")]
            )
            .unwrap()
            .retryable
        );
        // Rate-limit resets count for a 429 only, and only without an explicit wait.
        let resets = [("x-ratelimit-reset-requests", "1s")];
        assert_eq!(
            class(429, &resets).unwrap().retry_after,
            Some(Duration::from_secs(1))
        );
        assert_eq!(class(500, &resets).unwrap().retry_after, None);
        assert_eq!(
            class(429, &[resets[0], ("retry-after-ms", "30")])
                .unwrap()
                .retry_after,
            Some(Duration::from_millis(30))
        );
        // A success is a success whatever its headers say.
        assert_eq!(
            class(200, &[("x-should-retry", "true"), ("retry-after", "1")]),
            None
        );
    }

    /// A `grpc-retry-pushback-ms` that is there but malformed means "do not retry" (gRPC A6),
    /// whether it is text (`soon`) or bytes that are not visible ASCII.
    #[test]
    fn a_malformed_pushback_is_not_retryable_whatever_its_bytes() {
        use http::HeaderValue;
        let with_pushback = |value: HeaderValue| {
            let mut r = Response::new(());
            *r.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
            r.headers_mut().insert("grpc-retry-pushback-ms", value);
            HttpClassifier::new()
                .classify(&Ok::<_, BoxError>(r))
                .unwrap()
        };
        let opaque = with_pushback(HeaderValue::from_bytes(b"\xff100").unwrap());
        assert!(!opaque.retryable);
        assert_eq!(opaque.retry_after, None);
        let soon = with_pushback(HeaderValue::from_static("soon"));
        assert!(!soon.retryable);
        assert_eq!(soon.retry_after, None);
        let valid = with_pushback(HeaderValue::from_static("100"));
        assert!(valid.retryable);
        assert_eq!(valid.retry_after, Some(Duration::from_millis(100)));
    }

    #[test]
    fn hints_can_be_switched_off() {
        let c = HttpClassifier::builder()
            .server_hints(false)
            .build()
            .unwrap()
            .classify(&response(429, &[("retry-after-ms", "200")]))
            .unwrap();
        assert_eq!(c.retry_after, None);
    }

    #[tokio::test(start_paused = true)]
    async fn retry_after_dates_follow_the_paused_clock() {
        let date =
            httpdate::fmt_http_date(palisade_core::hint::wall_clock() + Duration::from_secs(30));
        let first = class(503, &[("retry-after", &date)])
            .unwrap()
            .retry_after
            .unwrap();
        assert!(first > Duration::from_secs(28) && first <= Duration::from_secs(30));
        tokio::time::advance(Duration::from_secs(20)).await;
        let later = class(503, &[("retry-after", &date)])
            .unwrap()
            .retry_after
            .unwrap();
        assert!(first - later >= Duration::from_millis(19_999), "{later:?}");
    }

    #[test]
    fn server_clock_dates() {
        let c = HttpClassifier::builder()
            .dates_from_server_clock(true)
            .build()
            .unwrap()
            .classify(&response(
                503,
                &[
                    ("date", "Wed, 21 Oct 2015 07:28:00 GMT"),
                    ("retry-after", "Wed, 21 Oct 2015 07:28:09 GMT"),
                ],
            ))
            .unwrap();
        assert_eq!(c.retry_after, Some(Duration::from_secs(9)));
    }

    #[test]
    fn anthropic_rate_limit_resets_are_the_wait_of_a_429() {
        let headers = [
            ("date", "Mon, 01 Jan 2024 00:00:00 GMT"),
            ("anthropic-ratelimit-requests-reset", "2024-01-01T00:00:07Z"),
            ("anthropic-ratelimit-requests-remaining", "0"),
        ];
        let c = HttpClassifier::builder()
            .dates_from_server_clock(true)
            .build()
            .unwrap()
            .classify(&response(429, &headers))
            .unwrap();
        assert_eq!(c.category, Category::RateLimited);
        assert_eq!(c.retry_after, Some(Duration::from_secs(7)));
        // On the process's clock, 2024 is long past: retry now.
        let c = class(429, &headers).unwrap();
        assert_eq!(c.retry_after, Some(Duration::ZERO));
    }

    #[test]
    fn overrides() {
        let classifier = HttpClassifier::builder()
            .status(429, Class::new(Category::ResourceExhausted))
            .success(404)
            .build()
            .unwrap();
        let c = classifier
            .classify(&response(429, &[("retry-after", "3")]))
            .unwrap();
        assert_eq!(c.category, Category::ResourceExhausted);
        assert_eq!(c.retry_after, Some(Duration::from_secs(3)));
        assert_eq!(classifier.classify(&response(404, &[])), None);
        assert_eq!(
            classifier.classify(&response(503, &[])).unwrap().category,
            Category::ServerError
        );
    }

    #[test]
    fn invalid_overrides_fail_the_build() {
        let err = HttpClassifier::builder()
            .success(404)
            .status(42, Class::new(Category::Transient))
            .build()
            .unwrap_err();
        assert_eq!(err.field(), "status[1]");
        let err = HttpClassifier::builder()
            .success(404)
            .status(404, Class::new(Category::Transient))
            .build()
            .unwrap_err();
        assert_eq!(err.field(), "status[1]");
    }

    #[test]
    fn describe_says_the_status() {
        let c = HttpClassifier::new();
        let r = response(503, &[]).unwrap();
        assert_eq!(
            Classify::<Response<()>, BoxError>::describe(&c, &r).as_deref(),
            Some("HTTP 503 Service Unavailable")
        );
        assert_eq!(
            describe_status(StatusCode::from_u16(599).unwrap()),
            "HTTP 599"
        );
    }

    #[test]
    fn describe_quotes_the_start_of_the_body() {
        let c = HttpClassifier::new();
        let describe = |r: &Response<()>| {
            Classify::<Response<()>, BoxError>::describe(&c, r)
                .unwrap()
                .into_owned()
        };
        // What a 500 whose body starts with `body` quotes of it.
        let quoted_500 = |body: &str| {
            let text = describe(&with_body(500, &[], body).unwrap());
            text.strip_prefix("HTTP 500 Internal Server Error: ")
                .unwrap_or_else(|| panic!("{text}"))
                .to_owned()
        };
        let spent = with_body(429, &[], SPENT).unwrap();
        assert_eq!(
            describe(&spent),
            format!("HTTP 429 Too Many Requests: {SPENT}")
        );
        // One line: whitespace runs become one space, other control characters are escaped.
        let pretty = with_body(503, &[], "{\n  \"error\":\t\"down\"\r\n}\u{7}").unwrap();
        assert_eq!(
            describe(&pretty),
            "HTTP 503 Service Unavailable: { \"error\": \"down\" }\\u{7}"
        );
        // An empty excerpt, or one of whitespace alone (a proxy's "\r\n"), says nothing more
        // than the status, whole or not.
        for body in ["", " \r\n", "\n"] {
            let blank = with_body(503, &[], body).unwrap();
            assert_eq!(describe(&blank), "HTTP 503 Service Unavailable", "{body:?}");
        }
        let mut cut_blank = response(503, &[]).unwrap();
        cut_blank
            .extensions_mut()
            .insert(BodyExcerpt::new(bytes::Bytes::from_static(b"   "), false));
        assert_eq!(describe(&cut_blank), "HTTP 503 Service Unavailable");
        // An escape counts as what it writes: 300 control characters are quoted as 200
        // characters of escapes (`\u{9f}` is 6), then the mark.
        let controls = "\u{9f}".repeat(300);
        let quoted = quoted_500(&controls);
        assert_eq!(quoted, format!("{}…", "\\u{9f}".repeat(33)));
        // Characters that reorder or hide text in a log line are escaped too.
        let sneaky = with_body(400, &[], "ok\u{202E}txt.exe\u{200B}").unwrap();
        assert_eq!(
            describe(&sneaky),
            "HTTP 400 Bad Request: ok\\u{202e}txt.exe\\u{200b}"
        );
        // At most QUOTED_CHARS characters (not bytes), then `…`.
        let long = "é".repeat(QUOTED_CHARS + 1);
        let quoted = quoted_500(&long);
        assert_eq!(quoted, format!("{}…", "é".repeat(QUOTED_CHARS)));
        // Exactly QUOTED_CHARS: whole, no mark.
        let fits = "a".repeat(QUOTED_CHARS);
        let text = describe(&with_body(500, &[], &fits).unwrap());
        assert!(text.ends_with(&format!(": {fits}")), "{text}");
        // A space that would be the 201st character is cut too.
        let words = format!("{} b", "a".repeat(QUOTED_CHARS));
        let text = describe(&with_body(500, &[], &words).unwrap());
        assert!(text.ends_with(&format!(": {fits}…")), "{text}");
        // The spaces between words count too: 100 words of "ab" are 299 characters.
        let spaced = "ab ".repeat(100);
        let quoted = quoted_500(&spaced);
        assert_eq!(quoted, format!("{}ab…", "ab ".repeat(66)));
        assert_eq!(quoted.chars().count(), QUOTED_CHARS + 1);
        // An excerpt the limit stopped goes on past what it shows.
        let mut cut = response(502, &[]).unwrap();
        cut.extensions_mut().insert(BodyExcerpt::new(
            bytes::Bytes::from_static(b"upstream connect error"),
            false,
        ));
        assert_eq!(
            describe(&cut),
            "HTTP 502 Bad Gateway: upstream connect error…"
        );
    }

    #[test]
    fn failed_responses_read_as_http_statuses() {
        use palisade_core::{ClassifyLayer, FailedResponse, class_of};
        use tower::{Service, ServiceExt, service_fn};
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        rt.block_on(async {
            let mut svc = tower::ServiceBuilder::new()
                .layer(ClassifyLayer::new(HttpClassifier::new()))
                .service(service_fn(|_: ()| async {
                    Ok::<_, BoxError>(Response::builder().status(503).body(()).unwrap())
                }));
            let err = svc.ready().await.unwrap().call(()).await.unwrap_err();
            assert_eq!(class_of(&err).category, Category::ServerError);
            assert_eq!(
                err.to_string(),
                "HTTP 503 Service Unavailable, classified as server_error (medium, retryable)"
            );
            let restored = FailedResponse::<Response<()>>::restore(err).unwrap();
            assert_eq!(restored.status(), 503);
        });
    }

    #[test]
    fn debug_shows_the_options() {
        let c = HttpClassifier::builder()
            .success(404)
            .server_hints(false)
            .dates_from_server_clock(true)
            .build()
            .unwrap();
        let text = format!("{c:?}");
        assert!(
            text.starts_with("HttpClassifier { overrides: [(404, None)]"),
            "{text}"
        );
        assert!(text.contains("hints: false, server_clock: true"), "{text}");
    }

    #[test]
    fn a_classifier_of_ones_own_for_errors() {
        let errors = palisade_core::DefaultClassifier::builder()
            .message("model is loading", Class::new(Category::Transient))
            .build()
            .unwrap();
        let c = HttpClassifier::builder().errors(errors).build().unwrap();
        let err: BoxError = "model is loading, try later".into();
        assert_eq!(c.classify_error(&*err).category, Category::Transient);
        assert_eq!(
            HttpClassifier::new().classify_error(&*err).category,
            Category::Unknown
        );
    }

    /// A response of `status` with `headers` whose body starts with `body` (as `PeekLayer`
    /// leaves it).
    fn with_body(
        status: u16,
        headers: &[(&str, &str)],
        body: &str,
    ) -> Result<Response<()>, BoxError> {
        let mut r = response(status, headers)?;
        r.extensions_mut().insert(BodyExcerpt::new(
            bytes::Bytes::copy_from_slice(body.as_bytes()),
            true,
        ));
        Ok(r)
    }

    const SPENT: &str = r#"{"error":{"message":"You exceeded your current quota, please check your plan and billing details.","type":"insufficient_quota","param":null,"code":"insufficient_quota"}}"#;

    #[test]
    fn the_body_takes_the_retries_away_within_the_category() {
        let c = HttpClassifier::new();
        let quota = c.classify(&with_body(429, &[], SPENT)).unwrap();
        assert_eq!(quota.category, Category::RateLimited);
        assert!(!quota.retryable);
        // Without the excerpt: a passing rate limit.
        assert!(c.classify(&response(429, &[])).unwrap().retryable);
        // Google's quota per day, Bedrock's service quota.
        let google = "Quota exceeded for quota metric 'Generate Content API requests per day'";
        assert!(!c.classify(&with_body(429, &[], google)).unwrap().retryable);
        let bedrock = r#"{"__type":"ServiceQuotaExceededException","message":"..."}"#;
        assert!(!c.classify(&with_body(429, &[], bedrock)).unwrap().retryable);
        // A rate limit that says how long: its wait, unless a header says.
        let tpm =
            "Rate limit reached for gpt-4o on tokens per min (TPM). Please try again in 1.8s.";
        let busy = c.classify(&with_body(429, &[], tpm)).unwrap();
        assert!(busy.retryable);
        assert_eq!(busy.retry_after, Some(Duration::from_millis(1800)));
        let busy = c
            .classify(&with_body(429, &[("retry-after-ms", "200")], tpm))
            .unwrap();
        assert_eq!(busy.retry_after, Some(Duration::from_millis(200)));
        // The reset of a limit that is used up is a header saying how long; the soonest reset
        // of limits that are not used up is a guess, and the body's wait beats it.
        let not_spent = [
            ("x-ratelimit-remaining-requests", "499"),
            ("x-ratelimit-reset-requests", "120ms"),
            ("x-ratelimit-remaining-tokens", "500"),
            ("x-ratelimit-reset-tokens", "3s"),
        ];
        let busy = c.classify(&with_body(429, &not_spent, tpm)).unwrap();
        assert_eq!(busy.retry_after, Some(Duration::from_millis(1800)));
        let busy = c.classify(&response(429, &not_spent)).unwrap();
        assert_eq!(busy.retry_after, Some(Duration::from_millis(120)));
        let spent = [
            ("x-ratelimit-remaining-tokens", "0"),
            ("x-ratelimit-reset-tokens", "6s"),
        ];
        let busy = c.classify(&with_body(429, &spent, tpm)).unwrap();
        assert_eq!(busy.retry_after, Some(Duration::from_secs(6)));
        // The body never makes a failure retryable: a 501 whose body says "internal error".
        let c501 = c
            .classify(&with_body(501, &[], "Internal Server Error"))
            .unwrap();
        assert_eq!(c501.category, Category::ServerError);
        assert!(!c501.retryable);
        // Nothing the rules know: the status's class.
        let odd = c
            .classify(&with_body(429, &[], "the flux capacitor wobbled"))
            .unwrap();
        assert!(odd.retryable);
    }

    #[test]
    fn the_body_changes_a_client_errors_category_only_to_say_it_cannot_succeed() {
        let c = HttpClassifier::new();
        // OpenAI's 429 for a request larger than the per-minute limit.
        let large = "Request too large for gpt-4o in organization org-x on tokens per min (TPM): \
            Limit 30000, Requested 50000. The input or output tokens must be reduced.";
        let v = c.classify(&with_body(429, &[], large)).unwrap();
        assert_eq!((v.category, v.retryable), (Category::Validation, false));
        // A spent quota on a 400 or a 403 is a spent quota.
        let v = c.classify(&with_body(403, &[], SPENT)).unwrap();
        assert_eq!((v.category, v.retryable), (Category::RateLimited, false));
        // A retryable verdict of another category is not taken: a 400 that names a timeout.
        let v = c
            .classify(&with_body(
                400,
                &[],
                "Invalid value for 'timeout': must be positive",
            ))
            .unwrap();
        assert_eq!((v.category, v.retryable), (Category::Validation, false));
        // A server error keeps its category: a proxy's page that says "not found", an
        // overloaded 503.
        let v = c
            .classify(&with_body(502, &[], "<h1>upstream not found</h1>"))
            .unwrap();
        assert_eq!((v.category, v.retryable), (Category::Network, true));
        let v = c.classify(&with_body(503, &[], "overloaded")).unwrap();
        assert_eq!((v.category, v.retryable), (Category::ServerError, true));
        let v = c.classify(&with_body(503, &[], SPENT)).unwrap();
        assert_eq!((v.category, v.retryable), (Category::ServerError, true));
    }

    #[test]
    fn headers_have_the_last_word_over_the_body() {
        let c = HttpClassifier::new();
        let v = c
            .classify(&with_body(429, &[("x-should-retry", "true")], SPENT))
            .unwrap();
        assert!(v.retryable);
        let v = c
            .classify(&with_body(429, &[("retry-after", "7")], SPENT))
            .unwrap();
        assert!(!v.retryable);
        assert_eq!(v.retry_after, Some(Duration::from_secs(7)));
        // A success is a success whatever its body says.
        assert_eq!(c.classify(&with_body(200, &[], SPENT)), None);
        // As is a status declared one.
        let lenient = HttpClassifier::builder().success(429).build().unwrap();
        assert_eq!(lenient.classify(&with_body(429, &[], SPENT)), None);
    }

    #[test]
    fn the_bodys_rules_are_the_error_classifiers() {
        // A 402 whose body says the credits are spent, by a rule of one's own.
        let errors = palisade_core::DefaultClassifier::builder()
            .message(
                "credits? (?:are |is )?(?:exhausted|spent)",
                Class::new(Category::RateLimited).with_retryable(false),
            )
            .build()
            .unwrap();
        let c = HttpClassifier::builder().errors(errors).build().unwrap();
        let v = c
            .classify(&with_body(402, &[], "your credits are exhausted"))
            .unwrap();
        assert_eq!((v.category, v.retryable), (Category::RateLimited, false));
        let v = HttpClassifier::new()
            .classify(&with_body(402, &[], "your credits are exhausted"))
            .unwrap();
        assert_eq!(v.category, Category::Validation);
        // The built-in rules still follow the user's.
        assert!(!c.classify(&with_body(429, &[], SPENT)).unwrap().retryable);
    }

    #[test]
    fn errors_by_the_transport_rules_then_the_defaults() {
        let c = HttpClassifier::new();
        let err: BoxError = Box::new(std::io::Error::from(std::io::ErrorKind::ConnectionReset));
        assert_eq!(
            c.classify(&Err::<Response<()>, _>(err)).unwrap().category,
            Category::Network
        );
        let err: BoxError = "rate limit reached".into();
        assert_eq!(c.classify_error(&*err).category, Category::RateLimited);
    }
}
