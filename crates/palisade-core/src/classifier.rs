//! The [`Classify`] trait, the [`DefaultClassifier`] and its [`ClassifierBuilder`].

use std::borrow::Cow;
use std::error::Error;
use std::fmt;
use std::io;
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use regex::{Regex, RegexBuilder, RegexSet, RegexSetBuilder};

use crate::error::{Classified, ConfigError, ResponseClass};
use crate::{BoxError, Category, Class, hint, registry};

/// Decides whether an outcome is a success or a failure, and of what class.
///
/// It sees the whole `Result`: an `Ok` HTTP 503 can be a failure, an `Err` can be accepted as a
/// normal outcome (return `None` and the classify layer passes it up as
/// [`Category::Ignored`]). `None` means success.
///
/// Closures implement it through [`classify_fn`].
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot classify outcomes of type `Result<{Res}, {E}>`",
    label = "not a classifier for this service's responses",
    note = "`DefaultClassifier` classifies errors of any response type; for HTTP responses use `palisade_http::HttpClassifier`, or write one with `classify_fn`"
)]
pub trait Classify<Res, E> {
    /// The verdict on one outcome: `None` for success, `Some(class)` for a failure.
    fn classify(&self, result: &Result<Res, E>) -> Option<Class>;

    /// What failed, in a few words, for a response judged a failure (`HTTP 503 Service
    /// Unavailable`, `gRPC UNAVAILABLE`): the start of its
    /// [`FailedResponse`](crate::FailedResponse)'s message. Called only for such responses;
    /// `None` (the default) leaves the message at the class.
    fn describe(&self, _response: &Res) -> Option<Cow<'static, str>> {
        None
    }
}

impl<Res, E, C: Classify<Res, E> + ?Sized> Classify<Res, E> for &C {
    fn classify(&self, result: &Result<Res, E>) -> Option<Class> {
        (**self).classify(result)
    }

    fn describe(&self, response: &Res) -> Option<Cow<'static, str>> {
        (**self).describe(response)
    }
}

impl<Res, E, C: Classify<Res, E> + ?Sized> Classify<Res, E> for Arc<C> {
    fn classify(&self, result: &Result<Res, E>) -> Option<Class> {
        (**self).classify(result)
    }

    fn describe(&self, response: &Res) -> Option<Cow<'static, str>> {
        (**self).describe(response)
    }
}

/// A [`Classify`] made from a closure; see [`classify_fn`].
#[derive(Clone, Copy)]
pub struct ClassifyFn<F>(F);

impl<F> fmt::Debug for ClassifyFn<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("ClassifyFn")
            .field(&std::any::type_name::<F>())
            .finish()
    }
}

/// Makes a [`Classify`] from a closure over `&Result<Res, E>`.
///
/// ```
/// use palisade_core::{classify_fn, BoxError, Category, Class, Classify, DefaultClassifier};
///
/// // A response type whose status says whether it worked; errors go to the default rules.
/// struct Reply { status: u16 }
/// let defaults = DefaultClassifier::default();
/// let classifier = classify_fn(move |r: &Result<Reply, BoxError>| match r {
///     Ok(reply) if reply.status == 429 => Some(Class::new(Category::RateLimited)),
///     Ok(reply) if reply.status >= 500 => Some(Class::new(Category::ServerError)),
///     Ok(_) => None,
///     Err(e) => Some(defaults.classify_error(&**e)),
/// });
/// assert_eq!(classifier.classify(&Ok(Reply { status: 200 })), None);
/// assert_eq!(
///     classifier.classify(&Ok(Reply { status: 503 })).unwrap().category,
///     Category::ServerError
/// );
/// ```
pub fn classify_fn<F>(f: F) -> ClassifyFn<F> {
    ClassifyFn(f)
}

impl<Res, E, F> Classify<Res, E> for ClassifyFn<F>
where
    F: Fn(&Result<Res, E>) -> Option<Class>,
{
    fn classify(&self, result: &Result<Res, E>) -> Option<Class> {
        (self.0)(result)
    }
}

type TypeRule = Arc<dyn Fn(&(dyn Error + 'static)) -> Option<Class> + Send + Sync>;

struct Rules {
    type_rules: Vec<TypeRule>,
    messages: RegexSet,
    message_classes: Vec<Class>,
    hint: Option<Regex>,
    unknown: Class,
    builtin_types: bool,
}

/// The shapes in which a status code (`$code`, a regex fragment such as `5\d\d`) counts as an
/// HTTP status in a message. A number anywhere else (`512 tokens`, `line 503`, `port 4011`,
/// `500ms`, `exit code 503`, the path segment in `GET https://host/status/401`) is not a status.
///
/// Between a key (`status`, `code`) and its number only what separates a key from its value
/// counts: spaces, quotes (escaped too), `:`, `=`, `#` and an opening bracket; not `/`, `.`,
/// `?` or `&`, which make them parts of a path or a URL.
macro_rules! http_status {
    ($code:literal) => {
        concat!(
            // The whole message, or its start, as in a status line: "503", "503 Service
            // Unavailable", "404 page not found".
            r"^\W*",
            $code,
            r"\b",
            // "HTTP 503", "HTTP/1.1 503", "HTTP status 503", "HTTP Error 503: ...".
            r"|\bhttp(?:/[\d.]+)?(?:[\s_-]*(?:status|error|response|code))*[\s:=#]*",
            $code,
            r"\b",
            // "status 503", "status code: 503", "status_code=502", "statusCode: 503",
            // "(status 500)", "\"status\": 503", "status was 502"; not "/status/401". An
            // escaped key's closing `\"` comes before the separators, as in the `code` branch
            // below, so that JSON nested in a string (`\"status\": 429`) fits in their three.
            r#"|\bstatus(?:[\s_-]*code)?(?:\\?["'])?[\s\\"':=#(\[]{0,3}(?:(?:is|was|of)\s+)?"#,
            $code,
            r"\b",
            // A code the message says is an error's or a response's: "Error code: 429 - {...}"
            // (OpenAI's and Anthropic's SDKs), "error_code=503", "response code 503". A bare
            // "code" says no such thing: "exit code 503" is a process's.
            r#"|\b(?:error|response)[\s_-]*code[\s\\"':=#]{1,3}"#,
            $code,
            r"\b",
            // `code` as a key: "\"code\": 503" (Google's JSON errors), "'code': 503" (a
            // Python dict), "code=503" (logfmt).
            r#"|(?:["']code\\?["']\s*:\s*|\bcode=)"#,
            $code,
            r"\b",
            // "returned 504", "responded with 503", "returned HTTP status 500".
            r"|\b(?:returned|responded with|replied with)\s+(?:an?\s+)?(?:http\s+)?(?:status\s+)?",
            r"(?:code\s+)?(?:error\s+)?",
            $code,
            r"\b",
            // reqwest: "HTTP status server error (503 Service Unavailable) for url (...)".
            r"|(?:server|client) error \(",
            $code,
            r"\b",
        )
    };
}

/// Words that say a call ran out of time: `timed out`, `deadline exceeded`, `deadline has
/// elapsed` (a regex fragment).
macro_rules! timed_out {
    () => {
        r"timed.?out|deadline.?(?:exceeded|expired)|deadline (?:has )?elapsed"
    };
}

/// A server's own failure stated outright: a 5xx status, `Service Unavailable`, `Bad Gateway`,
/// `Internal Server Error` (a regex fragment). Evidence that wins over the bare words
/// `authentication` and `not found`, which a 5xx's message may name as what failed
/// ("503 Service Unavailable: authentication backend is down").
macro_rules! server_failed {
    () => {
        concat!(
            r"service.?unavailable|bad.?gateway|internal.?server.?error|",
            http_status!(r"5\d\d")
        )
    };
}

/// Words that say a call could not reach its peer: a refused or reset connection, reqwest's
/// `error sending request` and `error trying to connect`, a `dns error` (a regex fragment).
macro_rules! unreached {
    () => {
        r"connection (?:refused|reset)|error sending request|error trying to connect|dns error"
    };
}

/// The default pattern rules, in order (first match wins), each with the class it gives. Each
/// is case-insensitive.
///
/// A status code counts only where a message says it is one: as the message or its first
/// word (`503`, `503 Service Unavailable`), after `HTTP` (`HTTP 503`, `HTTP/1.1 503`), after
/// `status` (`status 503`, `status code: 503`, `(status 500)`), after a code the message calls
/// an error's or a response's (`Error code: 429`, `response code 503`), after `code` as a key
/// (`"code": 503`, `code=503`), after `returned` or `responded with`, or in reqwest's
/// `server error (503 ...)`. `prompt is 512 tokens over the limit`, `failed to parse JSON at
/// line 503`, `exit code 503` and `GET https://api.example.com/status/401` (a path segment, not
/// a status) are not. A message that opens with a number is read as a status line (`503
/// overloaded`), so `512 tokens exceed the limit` is one. Reason phrases and the names
/// providers and gRPC give their errors (`Service Unavailable`, `rate_limit_error`,
/// `RateLimitError`, `DEADLINE_EXCEEDED`, `ThrottlingException`, `status: Unavailable`) count
/// on their own, as whole words: `rate limit` inside an identifier that names something else
/// (`tool 'rate_limiter' crashed`), or joined by `-` or `/` into a longer name (the headers
/// `x-ratelimit-limit-requests`, `anthropic-ratelimit-requests-limit`, `RateLimit-Remaining`,
/// the URL `.../account/rate-limits`), is not a rate limit.
///
/// A rule's class is its category's ([`Class::new`]), but for two whose retryability is not
/// their category's default ([`Class::retryable`] says whether the same call may succeed, the
/// category what kind of failure it is): an exhausted quota is a [`Category::RateLimited`]
/// (the dependency refusing, which does not count against its health) that is not retryable,
/// and gRPC's `UNIMPLEMENTED` a [`Category::ServerError`] that is not retryable.
///
/// In order, the rules read:
///
/// 1. A request that cannot succeed as it is sent: [`Category::Validation`], whatever else the
///    message says (a `429`, a rate-limit URL, gRPC's `RESOURCE_EXHAUSTED`). A message larger
///    than gRPC's maximum (grpc-go's `received message larger than max`, tonic's `message
///    length too large`); a request larger than a per-minute limit (OpenAI's `Request too large
///    for gpt-4o ... on tokens per min (TPM) ... must be reduced`); a prompt longer than the
///    model's context (`prompt is too long`, `maximum context length`, `exceeds the context
///    window`, `exceeds the maximum number of tokens`, Cohere's `too many tokens: ...`).
/// 2. An exhausted quota: [`Category::RateLimited`], not retryable. OpenAI's
///    `insufficient_quota` and `please check your plan and billing details`, a Google quota
///    metric per day (`Quota exceeded for quota metric '... requests per day'`), Bedrock's
///    `ServiceQuotaExceededException`. A billing message that says when to come back (Gemini's
///    `... check your plan and billing details ... Please retry in 15s.`) is a wait:
///    retryable. A quota per minute, or one whose period the message does not say (`Quota
///    exceeded`, `exceeded your current quota`), is a rate limit like others (rule 4).
/// 3. The gRPC codes no word of the rules below reads, with the classes of palisade-http's
///    `GrpcClassifier`, as tonic displays a `Status` (since tonic 0.14 `code: '<the code's
///    description>', message: "..."`, as in `code: 'Some resource has been exhausted'`; before,
///    `status: ResourceExhausted, message: ...`) and grpc-go an error (`rpc error: code =
///    ResourceExhausted desc = ...`): `ALREADY_EXISTS`, `FAILED_PRECONDITION` and
///    `OUT_OF_RANGE` [`Category::Validation`]; `RESOURCE_EXHAUSTED` [`Category::RateLimited`],
///    retryable; `ABORTED` [`Category::Transient`]; `UNIMPLEMENTED` [`Category::ServerError`],
///    not retryable. The other codes' descriptions and names are read by the rules below as
///    words (`The service is currently unavailable`, `Deadline expired`, `not found`, `does not
///    have permission`, `invalid argument`, `authentication credentials`, `cancelled`,
///    `Internal error`), after what the message adds: `UNAVAILABLE` mapped from an HTTP 429
///    is a rate limit, `CANCELLED` with tonic's `Timeout expired` a timeout. `UNKNOWN` and
///    `DATA_LOSS` are what their message says, else unknown.
/// 4. A rate limit: `rate limit`, `rate-limited`, `rate_limit_error`, `RateLimitError`, `Too
///    Many Requests`, `throttl...`, `quota exceeded`, a 429.
/// 5. Refused credentials: `unauthorized`, `unauthenticated`, `authentication_error`,
///    `forbidden`, `permission denied`, `access denied`, an invalid API key, a 401 or 403.
/// 6. The word `authentication` with a timeout ([`Category::Timeout`]) or a failure to connect
///    ([`Category::Network`]) in the same message: a call for credentials that timed out or
///    could not connect (`ManagedIdentityCredential authentication failed: error sending
///    request: operation timed out`) is transient. The word alone is
///    [`Category::Authentication`].
/// 7. Then, in order: not found (`not found`, `model_not_found`, `NotFound`; not a part of a
///    URL's path, `.../not-found-pages/42`, which a transport error prints); a 400, 413 or 422
///    stated as a status ([`Category::Validation`],
///    whatever words the message adds: `HTTP 400: invalid 'timeout' parameter` names the field
///    that was wrong, no timeout); a timeout (`timed out`, `deadline exceeded`); a server error
///    (a 5xx, `Internal Server Error`, `Service Unavailable`, `Bad Gateway`, Envoy's `no
///    healthy upstream`); a timeout (`timeout`); a network failure (also hyper's `operation was canceled` and hyper-util's `client error
///    (Canceled)` as whole messages: a request dropped unsent because its connection closed,
///    not a cancellation); an exhausted resource
///    (`out of memory`, `overloaded`, a pool exhausted, Ollama's `server busy ... maximum
///    pending requests exceeded`); a request the dependency refused as invalid (`invalid`,
///    `bad request`, `too large`, a 400, 413 or 422); a cancellation (`cancelled`, nginx's
///    `499` and `client closed request`).
/// 8. A tower `Buffer` out of service, [`Category::Transient`] (the service is unavailable
///    for now: palisade-http's error responder answers it 503, where an unknown failure gets
///    500): `buffer's worker closed unexpectedly` (its
///    `Closed`), and `buffered service failed: ...` (its `ServiceError`) when the error it
///    carries matched nothing above; a class that error's type has (an `io::Error`'s kind,
///    palisade's own errors) decides first, as types always do.
///
/// tower's other errors are known too: `timeout`'s `Elapsed` by its type (feature `tower`), a
/// [`Category::Timeout`]; `load_shed`'s `Overloaded` (`service overloaded`) by rule 7, a
/// [`Category::ResourceExhausted`].
pub const DEFAULT_MESSAGE_RULES: &[(&str, Class)] = &[
    (
        concat!(
            // gRPC's maximum message size: grpc-go's `grpc: received message larger than max
            // (5000000 vs. 4194304)`, tonic's `decoded message length too large`.
            r"larger than max|message length too large|",
            // OpenAI's `Request too large for gpt-4o ... on tokens per min (TPM) ... The input
            // or output tokens must be reduced`, sent with a 429 and a rate-limit URL.
            r"request[\s_-]too[\s_-]large|tokens must be reduced|",
            // A prompt longer than the model's context: Anthropic's, OpenAI's (chat and
            // Responses), Gemini's, Cohere's (`too many tokens:`; Bedrock's throttling `Too
            // many tokens, please wait` is not one).
            r"(?:prompt|input) is too long|maximum context length|context[\s_-]length[\s_-]exceeded|",
            r"exceeds? the context window|exceeds the maximum number of tokens|",
            r"too many tokens\s*:|tokens in the prompt cannot exceed",
        ),
        Class::new(Category::Validation),
    ),
    (
        r"insufficient_quota|ServiceQuotaExceeded|quota metric '[^'\n]*\bper[\s_-]?day\b",
        Class::new(Category::RateLimited).with_retryable(false),
    ),
    (
        concat!(
            r"(?s:check your plan and billing.*",
            r"(?:retry[-_ ]?after|try again in|retry in)\s*[:=]?\s*\d)",
        ),
        Class::new(Category::RateLimited),
    ),
    (
        r"check your plan and billing",
        Class::new(Category::RateLimited).with_retryable(false),
    ),
    (
        concat!(
            r"\bcode: '(?:Some entity that we attempted to create already exists|",
            r"The system is not in a state required for the operation's execution|",
            r"Operation was attempted past the valid range)'|",
            r"(?:\bstatus: |\bcode = )(?:AlreadyExists|FailedPrecondition|OutOfRange)\b",
        ),
        Class::new(Category::Validation),
    ),
    (
        r"\bcode: 'Some resource has been exhausted'|(?:\bstatus: |\bcode = )ResourceExhausted\b",
        Class::new(Category::RateLimited),
    ),
    (
        r"\bcode: 'The operation was aborted'|(?:\bstatus: |\bcode = )Aborted\b",
        Class::new(Category::Transient),
    ),
    (
        concat!(
            r"\bcode: 'Operation is not implemented or not supported'|",
            r"(?:\bstatus: |\bcode = )Unimplemented\b",
        ),
        Class::new(Category::ServerError).with_retryable(false),
    ),
    (
        concat!(
            // "rate limit", "rate-limited", "ratelimit", "rate_limit_error", "RateLimitError",
            // "rate_limit_exceeded": words, or an identifier naming the condition; not one
            // naming something that handles it ("rate_limiter", "rate_limit_config"), nor a
            // part of a longer name joined by `-` or `/` (the headers
            // "x-ratelimit-limit-requests" and "RateLimit-Remaining", the URL
            // ".../account/rate-limits"). No look-around: the characters on each side are
            // read, a start or end of text, or a `-` or `/` that joins nothing.
            r"(?:^|[^\w/-])rate[\s_-]?limit(?:s|ed|ing)?",
            r"(?:[\s_-]?(?:error|exceeded|exception|reached))?(?:$|[^\w/-]|[/-](?:$|\W))|",
            r"too many requests|throttl|quota.?exceeded|exceeded your (?:current )?quota|",
            http_status!("429"),
        ),
        Class::new(Category::RateLimited),
    ),
    (
        concat!(
            r"unauthori[sz]ed|unauthenticated|authentication_error|forbidden|permission.?denied|",
            r"permission_error|does not have permission|access.?denied|",
            r"(?:invalid|incorrect) (?:x-)?api.?key|api.?key.?(?:not.?valid|invalid)|",
            r"\bcode: 'The request does not have valid authentication credentials'|",
            http_status!("40[13]"),
        ),
        Class::new(Category::Authentication),
    ),
    (
        concat!(
            r"(?s:authentication.*(?:",
            timed_out!(),
            r")|(?:",
            timed_out!(),
            r").*authentication)",
        ),
        Class::new(Category::Timeout),
    ),
    (
        concat!(
            r"(?s:authentication.*(?:",
            unreached!(),
            r")|(?:",
            unreached!(),
            r").*authentication)",
        ),
        Class::new(Category::Network),
    ),
    (
        concat!(
            r"(?s:authentication.*(?:",
            server_failed!(),
            r")|(?:",
            server_failed!(),
            r").*authentication)",
        ),
        Class::new(Category::ServerError),
    ),
    (r"authentication", Class::new(Category::Authentication)),
    (
        concat!(
            r"(?s:(?:not.?found|does not exist).*(?:",
            server_failed!(),
            r")|(?:",
            server_failed!(),
            r").*(?:not.?found|does not exist))",
        ),
        Class::new(Category::ServerError),
    ),
    (
        concat!(
            // "not found", "model_not_found", "NotFound", "ResourceNotFoundException"; not a
            // part of a URL's path or a name joined by `-` or `/` (".../v1/not-found-pages",
            // which a transport error's message prints with its URL). No look-around, as
            // for rate limits above.
            r"(?:^|[^/-])not.?found(?:$|[^/-]|[/-](?:$|\W))|does not exist|",
            http_status!("404"),
        ),
        Class::new(Category::NotFound),
    ),
    // A request the dependency answered as invalid, stated as a status: the words of the
    // rules below (`timeout`, `network`, `capacity`) then name what was wrong with it (a
    // `timeout` parameter), not what happened.
    (
        http_status!("4(?:00|13|22)"),
        Class::new(Category::Validation),
    ),
    (timed_out!(), Class::new(Category::Timeout)),
    (
        concat!(
            r"internal.?server|internal.?error|server.?error|server had an error|bad.?gateway|",
            r"service.?unavailable|\bunavailable\b|gateway.?time.?out|status: internal\b|",
            r"no healthy upstream|",
            http_status!(r"5\d\d"),
        ),
        Class::new(Category::ServerError),
    ),
    // "timeout" anywhere (`ReadTimeout`), "time out" only as words: not "runtime out of
    // memory", "runtime output" or "datetime out of range".
    (r"timeout|\btime[\s_-]?out\b", Class::new(Category::Timeout)),
    (
        concat!(
            r"connection (?:refused|reset|closed|aborted)|broken pipe|network|unreachable|dns|",
            r"connect(?:ion)? error|error trying to connect|transport error|refused.?stream|",
            r"unexpected (?:eof|end of file)|",
            // hyper's `Canceled`, whole (hyper 1 displays its kind alone, the reason is its
            // source) and as hyper-util's legacy client wraps it: a request dropped before it
            // was sent because its connection closed or was not ready, not the caller's
            // cancellation (a caller that gives up drops the future and sees no error).
            r"^operation was canceled$|^client error \(canceled\)$",
        ),
        Class::new(Category::Network),
    ),
    (
        concat!(
            r"out of memory|no space left|disk full|resource.?exhausted|pool (?:exhausted|depleted)|",
            r"overloaded|capacity|server (?:is )?busy|maximum pending requests",
        ),
        Class::new(Category::ResourceExhausted),
    ),
    (
        concat!(
            r"invalid|malformed|validation|bad request|unprocessable|too.?large|",
            http_status!("4(?:00|13|22)"),
        ),
        Class::new(Category::Validation),
    ),
    (
        concat!(r"cancell?ed|client closed request|", http_status!("499")),
        Class::new(Category::Cancelled),
    ),
    // tower's `Buffer` out of service: `buffer::error::Closed` (its worker gone) and
    // `ServiceError` (the buffered service failed; its message ends with the inner error's,
    // which the rules above read first). tower's `buffer` feature is not a dependency here,
    // so they are known by their messages.
    (
        r"buffer's worker closed unexpectedly|buffered service failed",
        Class::new(Category::Transient),
    ),
];

/// The pattern that finds a retry hint in an error message: `retry after 30 seconds`,
/// `retry-after: 2`, `try again in 1.5s`, `retry in 500ms`, `try again in 24 hours`. A number
/// without a unit is seconds; a number followed by a word that is not a unit (`retry after 30
/// attempts`, `2 weeks`) is no hint.
///
/// A compound duration, hours, minutes and seconds each glued to its number as Go prints a
/// `time.Duration`, is read whole: OpenAI's `Rate limit reached for gpt-4 ... Please try again
/// in 4m19.2s.` is 4 minutes 19.2 seconds, and `1m30s`, `6m0s`, `1h2m3.5s`, `1h30m` and `1h 30m`
/// (a space between the parts) read the same way. Its first group is then the whole compound
/// (see [`ClassifierBuilder::hint_pattern`]). Every form saturates at [`hint::LONGEST`].
///
/// A number grouped in thousands is read whole: `retry after 2,000 seconds` is 2000 seconds,
/// `retry after 1,500 ms` 1.5 seconds. A number that goes on as part of something else is no
/// wait, whatever pattern read it: one directly followed by `-`, `:` or `/`, or by `,`, `.`
/// or `T` and a digit (a date, `2025-06-01T12:00:00Z`; a time, `12:00`; a range, `5-10
/// seconds`; a rate, `30/min`; a version, `1.2.3`; a list, `30,60`). A number without a unit
/// whose whole part has ten digits or more (`retry after 1717243200`) is a Unix time, not a
/// wait, and no hint: read as seconds it would be over 31 years, past [`hint::LONGEST`].
pub const DEFAULT_HINT_PATTERN: &str = concat!(
    r"(?:retry[-_ ]?after|try again in|retry in)\s*[:=]?\s*",
    // A compound of two or three parts (`4m19.2s`, `1h30m`, `1h2m3.5s`), else a number grouped
    // in thousands (`2,000`), else a number.
    r"((?:\d+h ?(?:\d+m ?)?\d+(?:\.\d+)?s|\d+h ?\d+m|\d+m ?\d+(?:\.\d+)?s)\b|",
    r"\d{1,3}(?:,\d{3})+(?:\.\d+)?|\d+(?:\.\d+)?)",
    r"\s*(ms|milliseconds?|msecs?|s|secs?|seconds?|m|mins?|minutes?|h|hrs?|hours?|d|days?)?\b",
);

static DEFAULT_RULES: LazyLock<Rules> = LazyLock::new(|| {
    ClassifierBuilder::new()
        .build_rules()
        .expect("the built-in rules are valid")
});

/// The classifier palisade uses when told nothing else, extensible through
/// [`ClassifierBuilder`].
///
/// For an error it walks the `source()` chain, top first (through an `std::io::Error` into the
/// error it wraps, which its own `source()` skips), and for each error tries in order:
/// the class an inner classify layer already gave it ([`Classified`], [`FailedResponse`]); the
/// user's type rules; palisade's own errors ([`failure`](crate::failure)); error types whose
/// class the user [`register`](crate::register)ed; `std::io::Error` kinds; tower's and tokio's `Elapsed` (Timeout). Then it tries
/// the message rules on each error's message, top first, past a message that says only that a
/// layer below failed (tonic's `transport error`) when an error below it matches: tonic's
/// `transport error` caused by `Timeout expired` is a timeout, one caused by a refused
/// connection a network failure, and one caused by nothing the rules know a network failure. A failure nothing matched gets the
/// *unknown* class: `Category::Unknown`, retryable, because an
/// unrecognised failure is more often a passing fault than a permanent one and the retry budget
/// bounds the cost of being wrong. Change it with [`ClassifierBuilder::unknown`].
///
/// When the chosen class has no `retry_after`, a retry hint in any message of the chain
/// (`retry after 30 seconds`, `try again in 1.5s`, `try again in 4m19.2s`) fills it, as long
/// as the message says (up to [`hint::LONGEST`]): a layer above, not the classifier, decides
/// whether a wait is too long.
///
/// As a [`Classify`], every `Ok` is a success; pair it with a response rule through
/// [`classify_fn`] when responses can fail.
///
/// Cloning is cheap: the default rules are static and built rules are shared.
///
/// [`FailedResponse`]: crate::FailedResponse
#[derive(Clone)]
pub struct DefaultClassifier {
    /// The built rules, `None` for the built-in ones (`DEFAULT_RULES`): one word, where a
    /// reference-or-`Arc` enum takes two, and a classify layer's response future carries it.
    rules: Option<Arc<Rules>>,
}

impl Default for DefaultClassifier {
    fn default() -> Self {
        // The built-in patterns are compiled now, not on the first failure classified.
        LazyLock::force(&DEFAULT_RULES);
        DefaultClassifier { rules: None }
    }
}

impl fmt::Debug for DefaultClassifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let rules = self.rules();
        f.debug_struct("DefaultClassifier")
            .field("type_rules", &rules.type_rules.len())
            .field("message_rules", &rules.messages.patterns())
            .field("unknown", &rules.unknown)
            .finish()
    }
}

impl DefaultClassifier {
    /// The built-in rules only.
    pub fn new() -> Self {
        Self::default()
    }

    /// A builder whose rules come before the built-in ones.
    pub fn builder() -> ClassifierBuilder {
        ClassifierBuilder::new()
    }

    fn rules(&self) -> &Rules {
        match &self.rules {
            Some(rules) => rules,
            None => &DEFAULT_RULES,
        }
    }

    /// The class of an error, walking its `source()` chain.
    pub fn classify_error(&self, err: &(dyn Error + 'static)) -> Class {
        classify_with(self.rules(), err)
    }

    /// The class the message rules give `text`, read as an error's message would be: the
    /// first rule that matches (yours, then the built-in [`DEFAULT_MESSAGE_RULES`] unless
    /// switched off), with a retry hint in the text (`try again in 1.8s`) as its wait when the
    /// rule gives none; `None` when no rule matches, where
    /// [`classify_error`](Self::classify_error) would give the *unknown* class.
    ///
    /// For text that is not an error's message: the body of a failing HTTP response
    /// (palisade-http's `HttpClassifier` reads an excerpt of it so), a log line. The type
    /// rules are not tried: there is no error to read them from.
    ///
    /// ```
    /// use palisade_core::{Category, DefaultClassifier};
    ///
    /// let rules = DefaultClassifier::new();
    /// let body = r#"{"error": {"message": "You exceeded your current quota, please check your plan and billing details.", "type": "insufficient_quota", "code": "insufficient_quota"}}"#;
    /// let class = rules.classify_message(body).unwrap();
    /// assert_eq!(class.category, Category::RateLimited);
    /// assert!(!class.retryable, "a spent quota is not retried");
    ///
    /// let busy = rules.classify_message("Rate limit reached. Please try again in 1.5s.").unwrap();
    /// assert!(busy.retryable);
    /// assert_eq!(busy.retry_after, Some(std::time::Duration::from_millis(1500)));
    ///
    /// assert_eq!(rules.classify_message("the flux capacitor wobbled"), None);
    /// ```
    pub fn classify_message(&self, text: &str) -> Option<Class> {
        let rules = self.rules();
        let class = first_rule(rules, text)?;
        if class.retry_after.is_some() || class.category == Category::Ignored {
            return Some(class);
        }
        Some(
            match rules.hint.as_ref().and_then(|re| message_hint(re, text)) {
                Some(after) => class.with_retry_after(after),
                None => class,
            },
        )
    }
}

impl<Res> Classify<Res, BoxError> for DefaultClassifier {
    fn classify(&self, result: &Result<Res, BoxError>) -> Option<Class> {
        match result {
            Ok(_) => None,
            Err(e) => Some(self.classify_error(&**e)),
        }
    }
}

/// The class of any error that reached a layer, reading what the classify layer decided at the
/// source and otherwise applying the [`DefaultClassifier`]'s built-in rules.
///
/// ```
/// use palisade_core::{class_of, BoxError, Category};
/// use std::io;
///
/// let err: BoxError = Box::new(io::Error::from(io::ErrorKind::ConnectionRefused));
/// assert_eq!(class_of(&err).category, Category::Network);
///
/// let err: BoxError = "upstream said: rate limit reached, retry after 3 seconds".into();
/// let class = class_of(&err);
/// assert_eq!(class.category, Category::RateLimited);
/// assert_eq!(class.retry_after, Some(std::time::Duration::from_secs(3)));
/// ```
pub fn class_of(err: &BoxError) -> Class {
    class_of_dyn(&**err)
}

/// [`class_of`] for a borrowed error of any kind.
pub fn class_of_dyn(err: &(dyn Error + 'static)) -> Class {
    DefaultClassifier::default().classify_error(err)
}

/// [`DefaultClassifier::classify_error`] with `rules`.
fn classify_with(rules: &Rules, err: &(dyn Error + 'static)) -> Class {
    let known = chain(err).find_map(|e| known_class(rules, e).map(|class| (e, class)));
    // A verdict an error carries (a classify layer's `Classified`, a response's class) is
    // final: its classifier read the message already, with its own hint rule (or none),
    // and a second reading would add a wait it chose not to give. So is a failed fallback's:
    // its original was classified whole, hints included, and the messages a second reading
    // would add are the fallback strategies' (how long a backup asked to wait), or the
    // original's, read again past a verdict that gave no wait.
    if let Some((e, class)) = known
        && (e.is::<Classified>()
            || e.is::<ResponseClass>()
            || e.is::<crate::failure::FallbackFailed>())
    {
        return class;
    }
    let class = known
        .map(|(_, class)| class)
        .or_else(|| by_message(rules, err))
        .unwrap_or(rules.unknown);
    if class.retry_after.is_some() || class.category == Category::Ignored {
        return class;
    }
    match rules
        .hint
        .as_ref()
        .and_then(|re| chain(err).find_map(|e| message_hint(re, &e.to_string())))
    {
        Some(after) => class.with_retry_after(after),
        None => class,
    }
}

/// Messages that say only that a layer below failed, not how: tonic's `transport error`, whose
/// source says what happened (`Timeout expired`, a refused connection). An error whose whole
/// message is one of these takes the class of the first error below it that a message rule
/// matches, and its own match only when nothing below matches.
const WRAPPER_MESSAGES: &[&str] = &["transport error"];

/// The class the message rules give the chain of `err`: the first error, top first, whose
/// message a rule matches, past a [`WRAPPER_MESSAGES`] one when an error below it matches too.
fn by_message(rules: &Rules, err: &(dyn Error + 'static)) -> Option<Class> {
    let mut wrapper = None;
    for e in chain(err) {
        let text = e.to_string();
        let Some(class) = first_rule(rules, &text) else {
            continue;
        };
        let trimmed = text.trim();
        if WRAPPER_MESSAGES
            .iter()
            .any(|w| trimmed.eq_ignore_ascii_case(w))
        {
            wrapper.get_or_insert(class);
            continue;
        }
        return Some(class);
    }
    wrapper
}

/// The class of the first message rule that matches `text`.
fn first_rule(rules: &Rules, text: &str) -> Option<Class> {
    let i = rules.messages.matches(text).iter().next()?;
    Some(rules.message_classes[i])
}

fn chain<'a>(err: &'a (dyn Error + 'static)) -> impl Iterator<Item = &'a (dyn Error + 'static)> {
    // Bounded so that a cyclic `source()` implementation cannot hang the caller.
    std::iter::successors(Some(err), |e: &&'a (dyn Error + 'static)| next(*e)).take(64)
}

/// The error after `err` in its chain: its `source()`, except for an `io::Error` that wraps an
/// error of its own (`io::Error::other(e)`, `io::Error::new(kind, e)`), whose `source()` is
/// `e`'s source and skips `e` itself: there the next error is `e`, so a class that crossed an
/// io boundary (an `AsyncRead`, a body stream) is still found.
fn next<'a>(err: &'a (dyn Error + 'static)) -> Option<&'a (dyn Error + 'static)> {
    match err.downcast_ref::<io::Error>().and_then(io::Error::get_ref) {
        Some(wrapped) => Some(wrapped),
        None => err.source(),
    }
}

fn known_class(rules: &Rules, err: &(dyn Error + 'static)) -> Option<Class> {
    if let Some(c) = err.downcast_ref::<Classified>() {
        return Some(c.class());
    }
    if let Some(c) = err.downcast_ref::<ResponseClass>() {
        return Some(c.0);
    }
    if let Some(class) = rules.type_rules.iter().find_map(|rule| rule(err)) {
        return Some(class);
    }
    // A failed fallback's class is its original failure's, as the classifier in use reads it.
    if let Some(failed) = err.downcast_ref::<crate::failure::FallbackFailed>() {
        return Some(classify_with(rules, &**failed.original()).with_retryable(false));
    }
    if let Some(class) = crate::failure::own_class(err) {
        return Some(class);
    }
    if let Some(class) = registry::registered_class(err) {
        return Some(class);
    }
    if !rules.builtin_types {
        return None;
    }
    if let Some(class) = err
        .downcast_ref::<io::Error>()
        .and_then(|io| io_class(io.kind()))
    {
        return Some(class);
    }
    #[cfg(feature = "tower")]
    if err.is::<tower::timeout::error::Elapsed>() {
        return Some(Class::new(Category::Timeout));
    }
    if err.is::<tokio::time::error::Elapsed>() {
        return Some(Class::new(Category::Timeout));
    }
    None
}

/// The class of an `std::io::ErrorKind`, when the kind says enough.
pub fn io_class(kind: io::ErrorKind) -> Option<Class> {
    use io::ErrorKind as K;
    let category = match kind {
        K::TimedOut => Category::Timeout,
        K::ConnectionRefused
        | K::ConnectionReset
        | K::ConnectionAborted
        | K::NotConnected
        | K::BrokenPipe
        | K::AddrNotAvailable
        | K::AddrInUse
        | K::UnexpectedEof
        | K::HostUnreachable
        | K::NetworkUnreachable
        | K::NetworkDown => Category::Network,
        K::WouldBlock | K::Interrupted => Category::Transient,
        K::NotFound => Category::NotFound,
        K::PermissionDenied => Category::Authentication,
        K::InvalidInput | K::InvalidData => Category::Validation,
        K::OutOfMemory | K::StorageFull | K::QuotaExceeded => Category::ResourceExhausted,
        _ => return None,
    };
    Some(Class::new(category))
}

fn message_hint(re: &Regex, text: &str) -> Option<Duration> {
    let caps = re.captures(text)?;
    let number = caps.get(1)?;
    if goes_on(&text[number.end()..]) {
        return None;
    }
    // A compound (`4m19.2s`) carries its own units: a unit group after it is not read.
    if let Some(after) = compound(number.as_str()) {
        return Some(after);
    }
    let value = ungrouped(number.as_str());
    let value = value.as_ref();
    let unit = match caps.get(2).map(|m| m.as_str()) {
        Some(u) => unit_word(u),
        None => {
            // No unit read: seconds, unless the number is followed, past the end of the match,
            // by a word the pattern did not read ("2 hours" to a pattern without hours, "30
            // attempts"): then it counts something else, or in a unit unknown here.
            let end = caps.get(0)?.end();
            let between = &text[number.end()..end];
            // On the same line: a header's value followed by the next line is still seconds.
            let after = text[end..].trim_start_matches([' ', '\t']);
            let same_line = !between.contains(['\n', '\r']);
            if same_line && between.trim().is_empty() && after.starts_with(char::is_alphabetic) {
                return None;
            }
            // Ten digits or more: a Unix time (`1717243200`), not a number of seconds.
            let whole = value.split('.').next().unwrap_or(value);
            if whole.len() >= 10 && whole.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            Duration::from_secs(1)
        }
    };
    // A plain decimal, exactly; a user's pattern may capture other numbers (`1e3`), but not
    // the words a float reads (`NaN`, `inf`): nonsense is no hint, as for the hint parsers.
    hint::decimal(value, unit).or_else(|| {
        let n: f64 = value.parse().ok()?;
        if n.is_nan()
            || value
                .trim_start_matches(['+', '-'])
                .starts_with(char::is_alphabetic)
        {
            return None;
        }
        // Past an `f64` (`1e400`): the longest wait, as long digits are.
        hint::secs_f64((n * unit.as_secs_f64()).min(f64::MAX))
    })
}

/// Whether a hint's number goes on, in `rest` (the text after it), as part of something that
/// is not a wait: directly followed by `-`, `:` or `/` (a date, a time, a range, a rate), or by
/// `,`, `.` or `T` and a digit (a list or a longer number, a version, an ISO 8601 date's time).
fn goes_on(rest: &str) -> bool {
    let mut chars = rest.chars();
    match chars.next() {
        Some('-' | ':' | '/') => true,
        Some(',' | '.' | 'T' | 't') => chars.next().is_some_and(|c| c.is_ascii_digit()),
        _ => false,
    }
}

/// A number grouped in thousands (`2,000`, `1,000,000.5`) without its commas; any other
/// number as it is.
fn ungrouped(value: &str) -> Cow<'_, str> {
    if !value.contains(',') {
        return Cow::Borrowed(value);
    }
    let digits = |g: &str| g.bytes().all(|b| b.is_ascii_digit());
    let whole = value.split('.').next().unwrap_or(value);
    let mut groups = whole.split(',');
    let first = groups
        .next()
        .is_some_and(|g| (1..=3).contains(&g.len()) && digits(g));
    if first && groups.all(|g| g.len() == 3 && digits(g)) {
        Cow::Owned(value.replace(',', ""))
    } else {
        Cow::Borrowed(value)
    }
}

/// The length of a unit read by a hint pattern's unit group: `ms` or a word starting `milli`
/// is a millisecond, then by first letter `m` a minute, `h` an hour, `d` a day, anything else
/// a second. ASCII case is ignored, without allocating.
fn unit_word(unit: &str) -> Duration {
    let starts = |prefix: &str| {
        unit.as_bytes()
            .get(..prefix.len())
            .is_some_and(|head| head.eq_ignore_ascii_case(prefix.as_bytes()))
    };
    if starts("ms") || starts("milli") {
        Duration::from_millis(1)
    } else if starts("m") {
        Duration::from_secs(60)
    } else if starts("h") {
        Duration::from_secs(60 * 60)
    } else if starts("d") {
        Duration::from_secs(24 * 60 * 60)
    } else {
        Duration::from_secs(1)
    }
}

/// The units of a [`compound`] duration's parts.
const COMPOUND_UNITS: [(&str, Duration); 5] = [
    ("ms", Duration::from_millis(1)),
    ("s", Duration::from_secs(1)),
    ("m", Duration::from_secs(60)),
    ("h", Duration::from_secs(60 * 60)),
    ("d", Duration::from_secs(24 * 60 * 60)),
];

/// A compound duration, each decimal number glued to its unit (`d`, `h`, `m`, `s`, `ms`) and
/// the parts optionally separated by spaces: `4m19.2s`, `1h 30m`, `1h2m3.5s`. The sum of its
/// parts, saturating at [`hint::LONGEST`]; `None` unless all of `value` is such parts, so a
/// bare number (`30`, no unit) or another notation (`1e3`) is left to the caller.
fn compound(value: &str) -> Option<Duration> {
    let mut rest = value.trim();
    if rest.is_empty() {
        return None;
    }
    let mut total = Duration::ZERO;
    while !rest.is_empty() {
        // Both ends are found by char, so each split falls on a char boundary.
        let digits = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let (number, tail) = rest.split_at(digits);
        let letters = tail
            .find(|c: char| !c.is_ascii_alphabetic())
            .unwrap_or(tail.len());
        let (unit, tail) = tail.split_at(letters);
        let (_, unit) = COMPOUND_UNITS
            .iter()
            .find(|(name, _)| unit.eq_ignore_ascii_case(name))?;
        total = total.saturating_add(hint::decimal(number, *unit)?);
        rest = tail.trim_start_matches(' ');
    }
    Some(total.min(hint::LONGEST))
}

/// Builds a [`DefaultClassifier`] (made by [`DefaultClassifier::builder`]) with rules of your own before (or instead of) the built-in
/// ones. Rules are tried in the order they were added; the first match wins.
///
/// ```
/// use palisade_core::{BoxError, Category, Class, DefaultClassifier};
///
/// let classifier = DefaultClassifier::builder()
///     .message("model is loading", Class::new(Category::Transient))
///     .message("context length", Class::new(Category::Validation))
///     .build()?;
/// let err: BoxError = "Model is loading, please wait".into();
/// assert_eq!(classifier.classify_error(&*err).category, Category::Transient);
///
/// let bad = DefaultClassifier::builder().message("(unclosed", Class::new(Category::Validation)).build();
/// assert_eq!(bad.unwrap_err().field(), "message[0]");
/// # Ok::<(), palisade_core::ConfigError>(())
/// ```
pub struct ClassifierBuilder {
    type_rules: Vec<TypeRule>,
    messages: Vec<(String, Class)>,
    defaults: bool,
    hint: Option<String>,
    unknown: Class,
}

impl fmt::Debug for ClassifierBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClassifierBuilder")
            .field("type_rules", &self.type_rules.len())
            .field("messages", &self.messages)
            .field("defaults", &self.defaults)
            .field("hint", &self.hint)
            .field("unknown", &self.unknown)
            .finish()
    }
}

impl ClassifierBuilder {
    /// A builder with the built-in rules enabled and no rules of its own; made by
    /// [`DefaultClassifier::builder`].
    fn new() -> Self {
        ClassifierBuilder {
            type_rules: Vec::new(),
            messages: Vec::new(),
            defaults: true,
            hint: Some(DEFAULT_HINT_PATTERN.to_owned()),
            unknown: Class::new(Category::Unknown),
        }
    }

    /// Errors of type `T`, anywhere in the chain, get `class`.
    pub fn error_type<T: Error + 'static>(self, class: Class) -> Self {
        self.error_fn(move |_: &T| Some(class))
    }

    /// Errors of type `T`, anywhere in the chain, get the class `f` returns (`None`: try the
    /// next rule).
    pub fn error_fn<T, F>(mut self, f: F) -> Self
    where
        T: Error + 'static,
        F: Fn(&T) -> Option<Class> + Send + Sync + 'static,
    {
        self.type_rules
            .push(Arc::new(move |e: &(dyn Error + 'static)| {
                e.downcast_ref::<T>().and_then(&f)
            }));
        self
    }

    /// Errors whose message matches `pattern` (a case-insensitive regular expression) get
    /// `class`. An invalid pattern fails [`build`](Self::build) with the field `message[i]`.
    pub fn message(mut self, pattern: impl Into<String>, class: Class) -> Self {
        self.messages.push((pattern.into(), class));
        self
    }

    /// Whether the built-in type and message rules follow the user's (default `true`).
    pub fn defaults(mut self, enabled: bool) -> Self {
        self.defaults = enabled;
        self
    }

    /// The pattern that extracts a retry hint from a message: a case-insensitive regular
    /// expression whose first group is a number and whose optional second group is a unit
    /// (`ms`, `s`, `m`, `h`, `d`, or a word starting so: `millis`, `secs`, `minutes`, `hours`,
    /// `days`); without a unit the number is seconds, unless a word the pattern did not read
    /// follows it (`30 attempts`): then there is no hint. The first group may instead be a
    /// compound duration, each number glued to its unit (`ms`, `s`, `m`, `h`, `d`), the parts
    /// optionally separated by spaces (`4m19.2s`, `1h 30m`): it is read whole, as the
    /// [`DEFAULT_HINT_PATTERN`] reads OpenAI's `try again in 4m19.2s`, and the unit group is
    /// not read. A number grouped in thousands (`2,000`) is read whole. Whatever the pattern, a
    /// number that goes on as part of something else (directly followed by `-`, `:` or `/`, or
    /// by `,`, `.` or `T` and a digit: `2025-06-01T12:00:00Z`, `12:00`, `30/min`) is no hint,
    /// nor is a number without a unit of ten digits or more (a Unix time). `None` disables
    /// hints.
    pub fn hint_pattern(mut self, pattern: Option<String>) -> Self {
        self.hint = pattern;
        self
    }

    /// The class of a failure no rule matched (default: `Category::Unknown`, retryable).
    pub fn unknown(mut self, class: Class) -> Self {
        self.unknown = class;
        self
    }

    /// Builds the classifier, compiling the patterns.
    ///
    /// # Errors
    /// A [`ConfigError`] naming `message[i]` or `hint_pattern` when a pattern does not compile.
    pub fn build(self) -> Result<DefaultClassifier, ConfigError> {
        Ok(DefaultClassifier {
            rules: Some(Arc::new(self.build_rules()?)),
        })
    }

    fn build_rules(self) -> Result<Rules, ConfigError> {
        let mut patterns: Vec<String> = Vec::new();
        let mut classes = Vec::new();
        for (i, (pattern, class)) in self.messages.into_iter().enumerate() {
            // Compile each alone first, so the error names the rule.
            RegexBuilder::new(&pattern)
                .case_insensitive(true)
                .build()
                .map_err(|e| ConfigError::new(format!("message[{i}]"), regex_rule(&e)))?;
            patterns.push(pattern);
            classes.push(class);
        }
        if self.defaults {
            for (pattern, class) in DEFAULT_MESSAGE_RULES {
                patterns.push((*pattern).to_owned());
                classes.push(*class);
            }
        }
        let messages = RegexSetBuilder::new(&patterns)
            .case_insensitive(true)
            .build()
            .map_err(|e| ConfigError::new("message", regex_rule(&e)))?;
        let hint = match self.hint {
            Some(p) => Some(
                RegexBuilder::new(&p)
                    .case_insensitive(true)
                    .build()
                    .map_err(|e| ConfigError::new("hint_pattern", regex_rule(&e)))?,
            ),
            None => None,
        };
        Ok(Rules {
            type_rules: self.type_rules,
            messages,
            message_classes: classes,
            hint,
            unknown: self.unknown,
            builtin_types: self.defaults,
        })
    }
}

fn regex_rule(e: &regex::Error) -> String {
    format!("must be a valid regular expression: {e}")
}

#[cfg(test)]
mod tests;
