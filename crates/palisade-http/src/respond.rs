//! Serving: palisade's failures as HTTP responses, so that its layers stack on a server whose
//! error type is `Infallible` (axum's `Router`, hyper's `serve_connection`).
//!
//! [`ErrorResponseLayer`] goes on top of the stack; [`Responder`] is the mapping it applies,
//! usable on its own; [`HttpError`] and [`HttpAnswer`] are the same mapping as axum's
//! `IntoResponse` (feature `axum`).

use std::convert::Infallible;
use std::error::Error;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use http::header::{
    CONNECTION, CONTENT_TYPE, HeaderValue, RETRY_AFTER, TE, TRANSFER_ENCODING, UPGRADE,
};
use http::{HeaderMap, HeaderName, Response, StatusCode};
use palisade_core::failure::{
    AfterTimeouts, CircuitOpen, FallbackFailed, FeatureOff, NoHealthyEndpoint,
};
use palisade_core::{BoxError, Category, Class, ConfigError, FailedResponse, class_of};
use palisade_fallback::Answer;
use pin_project_lite::pin_project;
use tower_layer::Layer;
use tower_service::Service;

/// `x-palisade-degraded`: set on a fallback's answer, naming the strategy that gave it.
pub const X_PALISADE_DEGRADED: HeaderName = HeaderName::from_static("x-palisade-degraded");

/// A response type that becomes an `http::Response`: the response itself, or a fallback's
/// [`Answer`] (marked `x-palisade-degraded: <strategy>` when a fallback gave it).
pub trait IntoHttpResponse {
    /// The response's body type.
    type Body;

    /// The response.
    fn into_http_response(self) -> Response<Self::Body>;
}

impl<B> IntoHttpResponse for Response<B> {
    type Body = B;

    fn into_http_response(self) -> Response<B> {
        self
    }
}

impl<B> IntoHttpResponse for Answer<Response<B>> {
    type Body = B;

    /// The response; a fallback's answer gets the `x-palisade-degraded` header with the name
    /// of the strategy that answered (its class stays in the [`Degraded`] extension); a failing
    /// response handed back ([`Answer::Restored`]) loses its hop-by-hop headers, as
    /// [`Responder`] says under "Which failing responses pass through".
    ///
    /// [`Degraded`]: palisade_fallback::Degraded
    fn into_http_response(self) -> Response<B> {
        match self {
            Answer::Primary(response) => response,
            Answer::Restored { mut response, .. } => {
                remove_hop_by_hop(response.headers_mut());
                response
            }
            Answer::Fallback {
                mut response,
                degraded,
            } => {
                response.headers_mut().insert(
                    X_PALISADE_DEGRADED,
                    HeaderValue::from_str(degraded.strategy)
                        .unwrap_or(HeaderValue::from_static("fallback")),
                );
                response.extensions_mut().insert(degraded);
                response
            }
        }
    }
}

/// How a failure becomes a response: a status per category, server hints as headers, a small
/// JSON body.
///
/// | the failure | response |
/// |---|---|
/// | a failing response judged by a classify layer ([`FailedResponse`]), also inside a [`FallbackFailed`], whose body passes through (see below) | that response, without its hop-by-hop headers |
/// | an open breaker ([`CircuitOpen`]), no healthy endpoint ([`NoHealthyEndpoint`]), a switched-off feature ([`FeatureOff`]) | 503 Service Unavailable |
/// | otherwise, by its [class](class_of): `Timeout` (palisade's `Elapsed`, `DeadlineExceeded`) | 504 Gateway Timeout |
/// | `RateLimited` | 429 Too Many Requests |
/// | `Rejected`, `ResourceExhausted`, `Transient` | 503 Service Unavailable |
/// | `ServerError`, `Network` (a dependency failed or could not be reached) | 502 Bad Gateway |
/// | anything else | 500 Internal Server Error |
///
/// The failure reached the top of a server's stack, so it is the server's, not the caller's:
/// a 5xx, except a rate limit. Change a category's status with
/// [`ResponderBuilder::status`].
///
/// A class with a `retry_after` sets `Retry-After` (whole seconds, rounded up, per
/// [RFC 9110 §10.2.3](https://www.rfc-editor.org/rfc/rfc9110#section-10.2.3)) and
/// `retry-after-ms` (for clients that read the finer one, as OpenAI's and Anthropic's SDKs do);
/// `x-should-retry` says whether the class is retryable. The body is
/// `{"error":{"type":"<category>","message":"<the error>"}}` (the message can be left out with
/// [`ResponderBuilder::messages`]).
///
/// # Which failing responses pass through
///
/// A classify layer keeps a failing response in its error as it was, body type included, and
/// the responder can only give it back as a response of the body type it answers with, `B` in
/// [`respond`](Self::respond). It gives it back, status, end-to-end headers and body as the
/// dependency sent them, when its body type is:
///
/// - `B` itself (an [`ErrorResponseLayer`] over a service that answers `Response<B>`);
/// - with the `axum` feature, when `B` is axum's `Body` (as for [`HttpError`] in an axum
///   handler), any of these, converted with `Body::new` or `Body::from`:
///   - axum's `Body`;
///   - hyper's `body::Incoming`, what a hyper or hyper-util client answers (feature `hyper`,
///     on by default);
///   - http-body-util's `Full<Bytes>`, `Empty<Bytes>`, and `combinators::BoxBody<Bytes, E>`
///     and `UnsyncBoxBody<Bytes, E>` for `E` one of `BoxError`, `Infallible`, `axum::Error`
///     and (feature `hyper`) `hyper::Error`;
///   - `String`, `Bytes`, `Vec<u8>`, `&'static str`;
///   - [`GuardedBody<T>`](crate::body::GuardedBody), the body a [`GuardLayer`](crate::body::GuardLayer)
///     below the classify layer gives, for each `T` above that is an `http_body::Body`
///     (all but `Bytes`, `Vec<u8>` and `&'static str`).
///
/// A failing response with any other body cannot be given back: it is answered by its class
/// as any other failure (a 503 of the dependency becomes this table's 502, with palisade's
/// JSON body and the response's summary as its message). To have it pass through, convert
/// its body below the classify layer into one of the types above, for example with tower's
/// `map_response`: `ServiceBuilder::new().palisade(preset).map_response(|r: Response<MyBody>|
/// r.map(axum::body::Body::new)).service(client)`.
///
/// A dependency's 4xx given back reaches the caller as this server's own 4xx (a dependency's
/// 401 reads as the caller's credentials refused): a server that is not a proxy can have it
/// answered 502 instead with [`ResponderBuilder::client_errors_as_bad_gateway`].
///
/// The headers that describe the dependency's connection to this server rather than the
/// response are dropped, as [RFC 9110 §7.6.1](https://www.rfc-editor.org/rfc/rfc9110#section-7.6.1)
/// requires of an intermediary that forwards a message: `Connection` and every header it
/// names, `Keep-Alive`, `Proxy-Connection`, `TE`, `Transfer-Encoding` and `Upgrade`. Left
/// in, they would speak for this server's own connection to its caller: a dependency's
/// `Connection: close` would close the caller's keep-alive connection. The end-to-end
/// headers (`Content-Type`, `Retry-After`, `Trailer`, `grpc-*`, an `x-` header that
/// `Connection` does not name) pass through; `Trailer` must, for hyper to send a chunked
/// HTTP/1.1 body's trailers at all.
///
/// ```
/// use http::Response;
/// use palisade_core::BoxError;
/// use palisade_core::failure::{BreakerState, CircuitOpen};
/// use palisade_http::respond::Responder;
/// use std::time::Duration;
///
/// let open: BoxError = Box::new(CircuitOpen::new("llm".into(), BreakerState::Open, Some(Duration::from_millis(1500))));
/// let response: Response<String> = Responder::new().respond(open);
/// assert_eq!(response.status(), 503);
/// assert_eq!(response.headers()["retry-after"], "2");
/// assert_eq!(response.headers()["retry-after-ms"], "1500");
/// assert_eq!(response.body(), r#"{"error":{"type":"rejected","message":"circuit 'llm' open, retry in 1.5 s"}}"#);
/// ```
#[derive(Clone, Copy, Debug)]
pub struct Responder {
    statuses: [StatusCode; Category::ALL.len()],
    messages: bool,
    /// Whether a dependency's failing 4xx response (but 429) is answered 502, not given back.
    client_errors_as_bad_gateway: bool,
    /// Whether failures are answered as gRPC statuses (Trailers-Only responses).
    grpc: bool,
}

impl Default for Responder {
    fn default() -> Self {
        Self::new()
    }
}

fn default_status(category: Category) -> StatusCode {
    match category {
        Category::Timeout => StatusCode::GATEWAY_TIMEOUT,
        Category::RateLimited => StatusCode::TOO_MANY_REQUESTS,
        Category::Rejected | Category::ResourceExhausted | Category::Transient => {
            StatusCode::SERVICE_UNAVAILABLE
        }
        Category::ServerError | Category::Network => StatusCode::BAD_GATEWAY,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

impl Responder {
    /// The mapping in the table above.
    pub fn new() -> Self {
        Responder {
            statuses: Category::ALL.map(default_status),
            messages: true,
            client_errors_as_bad_gateway: false,
            grpc: false,
        }
    }

    /// A builder to change statuses and options.
    pub fn builder() -> ResponderBuilder {
        ResponderBuilder {
            responder: Self::new(),
            invalid: None,
        }
    }

    /// The status a failure of `category` gets (unless its type says otherwise).
    pub fn status(&self, category: Category) -> StatusCode {
        self.statuses[category.index()]
    }

    /// The response for `err`: a failing response given back as it was, less its hop-by-hop
    /// headers (see [Which failing responses pass
    /// through](#which-failing-responses-pass-through)), or the one the table gives.
    pub fn respond<B>(&self, err: BoxError) -> Response<B>
    where
        B: From<String> + Send + 'static,
    {
        if self.grpc {
            return match restore::<B>(err) {
                Ok(response) => response,
                // A failing response no fallback could answer is given back as well, as it
                // is on the HTTP path below.
                Err(err) => match err.downcast::<FallbackFailed>() {
                    Ok(failed) => {
                        let (original, failures) = (*failed).into_parts();
                        match restore::<B>(original) {
                            Ok(response) => response,
                            Err(original) => {
                                self.grpc_status(&FallbackFailed::new(original, failures))
                            }
                        }
                    }
                    Err(err) => self.grpc_status(&*err),
                },
            };
        }
        let err = match self.give_back::<B>(err) {
            Ok(response) => return response,
            Err(err) => err,
        };
        // A retry's final error after timed-out attempts: answered as the error it carries.
        let err = match err.downcast::<AfterTimeouts>() {
            Ok(after) => after.into_inner(),
            Err(err) => err,
        };
        let err = match err.downcast::<FallbackFailed>() {
            Ok(failed) => {
                let (original, _) = (*failed).into_parts();
                match self.give_back::<B>(original) {
                    Ok(response) => return response,
                    Err(original) => {
                        // Answer for the failure of the call itself, which the fallbacks
                        // could not hide; its class is the original's.
                        return self.build(&*original, class_of(&original));
                    }
                }
            }
            Err(err) => err,
        };
        let class = class_of(&err);
        self.build(&*err, class)
    }

    /// A gRPC failure as gRPC's Trailers-Only response: HTTP 200, `content-type:
    /// application/grpc`, `grpc-status` with [`GrpcStatus::from_error`]'s code,
    /// `grpc-message` (percent-encoded, unless messages are off), `grpc-retry-pushback-ms`
    /// for a class with a wait (`-1`, do not retry, for a class not retryable whose code a
    /// retry policy may list), and an empty body.
    ///
    /// [`GrpcStatus::from_error`]: crate::grpc::GrpcStatus::from_error
    fn grpc_status<B: From<String>>(&self, err: &(dyn Error + 'static)) -> Response<B> {
        let status = crate::grpc::GrpcStatus::from_error(err);
        let class = class_of_dyn_after_timeouts(err);
        let mut response = Response::new(B::from(String::new()));
        let headers = response.headers_mut();
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/grpc"));
        headers.insert(
            crate::grpc::GRPC_STATUS,
            HeaderValue::from(status.code.as_i32()),
        );
        if self.messages
            && !status.message.is_empty()
            && let Ok(value) = HeaderValue::from_str(&grpc_percent_encode(&status.message))
        {
            headers.insert(crate::grpc::GRPC_MESSAGE, value);
        }
        if let Some(after) = class.retry_after.filter(|_| class.retryable) {
            headers.insert(
                crate::hint::GRPC_RETRY_PUSHBACK_MS,
                HeaderValue::from(ceil_millis(after)),
            );
        } else if !class.retryable && may_be_retried(status.code) {
            // A negative pushback: "do not retry" (gRPC proposal A6), as `x-should-retry:
            // false` says over HTTP. Without it, a client whose retry policy lists the code
            // (`UNAVAILABLE` above all) retries an isolated breaker, a feature switched off,
            // a deadline that ran out.
            headers.insert(
                crate::hint::GRPC_RETRY_PUSHBACK_MS,
                HeaderValue::from_static("-1"),
            );
        }
        response
    }

    /// The failing response `err` carries, given back (see [`restore`]); a dependency's 4xx
    /// answered 502 instead when [`ResponderBuilder::client_errors_as_bad_gateway`] said so.
    fn give_back<B>(&self, err: BoxError) -> Result<Response<B>, BoxError>
    where
        B: From<String> + Send + 'static,
    {
        let class = self.client_errors_as_bad_gateway.then(|| class_of(&err));
        let response = restore::<B>(err)?;
        let status = response.status();
        match class {
            Some(class) if status.is_client_error() && status != StatusCode::TOO_MANY_REQUESTS => {
                let message = format!("the dependency answered {status}");
                Ok(self.answer(StatusCode::BAD_GATEWAY, class, &message))
            }
            _ => Ok(response),
        }
    }

    fn build<B: From<String>>(&self, err: &(dyn Error + 'static), class: Class) -> Response<B> {
        // Under a retry's marker of timed-out attempts, the error it carries decides.
        let err = match err.downcast_ref::<AfterTimeouts>() {
            Some(after) => &**after.inner(),
            None => err,
        };
        // Looked for along the chain (inside a classify layer's `Classified` too, which a
        // classify layer right above a router wraps its `NoHealthyEndpoint` in), as
        // `GrpcStatus::from_error` does.
        let refused = palisade_core::error::chain(err)
            .any(|e| e.is::<CircuitOpen>() || e.is::<NoHealthyEndpoint>() || e.is::<FeatureOff>());
        let status = if refused {
            StatusCode::SERVICE_UNAVAILABLE
        } else {
            self.status(class.category)
        };
        self.answer(status, class, &err.to_string())
    }

    /// A response of `status` for a failure of `class` that says `message`.
    fn answer<B: From<String>>(
        &self,
        status: StatusCode,
        class: Class,
        message: &str,
    ) -> Response<B> {
        let body = if self.messages {
            format!(
                r#"{{"error":{{"type":"{}","message":{}}}}}"#,
                class.category.as_str(),
                json_string(message)
            )
        } else {
            format!(r#"{{"error":{{"type":"{}"}}}}"#, class.category.as_str())
        };
        let mut response = Response::new(B::from(body));
        *response.status_mut() = status;
        let headers = response.headers_mut();
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        if let Some(after) = class.retry_after {
            headers.insert(RETRY_AFTER, HeaderValue::from(ceil_secs(after)));
            headers.insert(
                crate::hint::RETRY_AFTER_MS,
                HeaderValue::from(ceil_millis(after)),
            );
        }
        headers.insert(
            crate::hint::X_SHOULD_RETRY,
            HeaderValue::from_static(if class.retryable { "true" } else { "false" }),
        );
        response
    }
}

/// The failing response `err` carries, less its hop-by-hop headers, when its body can be
/// given back as a `B` (see [`Responder`]'s "Which failing responses pass through"); `err`
/// unchanged otherwise.
fn restore<B: Send + 'static>(err: BoxError) -> Result<Response<B>, BoxError> {
    let mut response = restore_as_is::<B>(err)?;
    remove_hop_by_hop(response.headers_mut());
    Ok(response)
}

fn restore_as_is<B: Send + 'static>(err: BoxError) -> Result<Response<B>, BoxError> {
    #[cfg(feature = "axum")]
    if std::any::TypeId::of::<B>() == std::any::TypeId::of::<axum::body::Body>() {
        return axum_impls::restore(err)
            .map(|response| same_type(response).expect("`B` is axum's `Body`"));
    }
    FailedResponse::<Response<B>>::restore(err)
}

/// Removes the hop-by-hop headers of a response about to be forwarded (RFC 9110 §7.6.1):
/// those that every `Connection` header names (comma-separated, any case), then `Connection`,
/// `Keep-Alive`, `Proxy-Connection`, `TE`, `Transfer-Encoding` and `Upgrade`. `Trailer` is
/// end-to-end (RFC 9110 §6.6.2) and stays, unless `Connection` names it.
fn remove_hop_by_hop(headers: &mut HeaderMap) {
    let named: Vec<HeaderName> = headers
        .get_all(CONNECTION)
        .iter()
        .flat_map(|value| value.as_bytes().split(|&b| b == b','))
        .filter_map(|name| HeaderName::from_bytes(name.trim_ascii()).ok())
        .collect();
    for name in named {
        headers.remove(name);
    }
    for name in [CONNECTION, TE, TRANSFER_ENCODING, UPGRADE] {
        headers.remove(name);
    }
    for name in ["keep-alive", "proxy-connection"] {
        headers.remove(name);
    }
}

/// `value` as a `U`, when `T` and `U` are the same type.
#[cfg(feature = "axum")]
fn same_type<T: 'static, U: 'static>(value: T) -> Option<U> {
    let mut value = Some(value);
    (&mut value as &mut dyn std::any::Any)
        .downcast_mut::<Option<U>>()
        .and_then(Option::take)
}

fn ceil_secs(d: Duration) -> u64 {
    d.as_secs().saturating_add(u64::from(d.subsec_nanos() > 0))
}

/// Whether gRPC clients' retry policies commonly list `code` among the codes they retry:
/// those that say the call may succeed if tried again (gRPC's status code guide: "retry at a
/// higher level" or "the service is currently unavailable"). The others say it will not, and
/// no retry policy lists them.
fn may_be_retried(code: crate::grpc::Code) -> bool {
    use crate::grpc::Code;
    matches!(
        code,
        Code::Unavailable
            | Code::DeadlineExceeded
            | Code::ResourceExhausted
            | Code::Aborted
            | Code::Internal
            | Code::Unknown
    )
}

fn ceil_millis(d: Duration) -> u64 {
    u64::try_from(d.as_nanos().div_ceil(1_000_000)).unwrap_or(u64::MAX)
}

/// The class of `err`, or of the error a retry's marker of timed-out attempts carries.
fn class_of_dyn_after_timeouts(err: &(dyn Error + 'static)) -> Class {
    match err.downcast_ref::<AfterTimeouts>() {
        Some(after) => palisade_core::class_of_dyn(&**after.inner()),
        None => palisade_core::class_of_dyn(err),
    }
}

/// `message` as a `grpc-message` value: percent-encoded, every byte outside visible ASCII
/// and space, and `%` itself, as `%XX` (gRPC over HTTP/2, "Responses").
fn grpc_percent_encode(message: &str) -> String {
    let mut out = String::with_capacity(message.len());
    for &b in message.as_bytes() {
        if (0x20..=0x7e).contains(&b) && b != b'%' {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// `s` as a JSON string literal.
pub(crate) fn json_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Builds a [`Responder`].
#[derive(Clone, Debug)]
pub struct ResponderBuilder {
    responder: Responder,
    invalid: Option<ConfigError>,
}

impl ResponderBuilder {
    /// Failures of `category` get `status` (a 4xx or 5xx).
    pub fn status(mut self, category: Category, status: StatusCode) -> Self {
        if !(status.is_client_error() || status.is_server_error()) && self.invalid.is_none() {
            self.invalid = Some(ConfigError::new(
                format!("status[{category}]"),
                "must be a client or server error status (4xx or 5xx)",
            ));
        }
        self.responder.statuses[category.index()] = status;
        self
    }

    /// Whether the body carries the error's message (default `true`; turn it off when
    /// messages may say more than callers should read).
    pub fn messages(mut self, enabled: bool) -> Self {
        self.responder.messages = enabled;
        self
    }

    /// Whether a dependency's failing response with a 4xx status (but 429), given back by
    /// default (see [Which failing responses pass
    /// through](Responder#which-failing-responses-pass-through)), is answered
    /// `502 Bad Gateway` instead (default `false`).
    ///
    /// Given back, a dependency's 401 or 404 reaches this server's caller as this server's
    /// own: the caller reads that *its* credentials were refused, or that *the resource it
    /// asked for* does not exist, when it was this server's request to the dependency that
    /// failed. A 502 says that: the body is palisade's JSON, of the failure's class (its
    /// `type` is the category the classifier gave the dependency's response), with the
    /// message `the dependency answered 404 Not Found`, and `x-should-retry` as its class
    /// says. A 429 still passes through, with its `Retry-After`: slowing down is what the
    /// caller should do too. Leave it off for a proxy, whose caller's request *is* the
    /// dependency's.
    ///
    /// ```
    /// use http::Response;
    /// use palisade_core::{BoxError, Category, Class, FailedResponse};
    /// use palisade_http::respond::Responder;
    ///
    /// let not_found = || -> BoxError {
    ///     let response = Response::builder().status(404).body("no such model".to_owned()).unwrap();
    ///     Box::new(FailedResponse::new(response, Class::new(Category::NotFound)))
    /// };
    /// let given_back: Response<String> = Responder::new().respond(not_found());
    /// assert_eq!(given_back.status(), 404);
    /// let responder = Responder::builder().client_errors_as_bad_gateway(true).build().unwrap();
    /// let ours: Response<String> = responder.respond(not_found());
    /// assert_eq!(ours.status(), 502);
    /// assert_eq!(
    ///     ours.body(),
    ///     r#"{"error":{"type":"not_found","message":"the dependency answered 404 Not Found"}}"#
    /// );
    /// ```
    pub fn client_errors_as_bad_gateway(mut self, enabled: bool) -> Self {
        self.responder.client_errors_as_bad_gateway = enabled;
        self
    }

    /// Whether failures are answered as gRPC statuses, for a gRPC server (a tonic one)
    /// (default `false`): a Trailers-Only response, HTTP 200 with `content-type:
    /// application/grpc`, `grpc-status` as [`GrpcStatus::from_error`] maps the failure
    /// (`DEADLINE_EXCEEDED` for a deadline or a timeout, `UNAVAILABLE` for an open breaker,
    /// `RESOURCE_EXHAUSTED` for a rate limit...), `grpc-message` (percent-encoded; left out
    /// with [`messages`](Self::messages) off), and `grpc-retry-pushback-ms` when the failure
    /// says how long to wait and may be retried, or `-1` ("do not retry", gRPC proposal A6,
    /// as `x-should-retry: false` over HTTP) when it may not be retried and its code is one
    /// a client's retry policy may list (an isolated breaker's or a switched-off feature's
    /// `UNAVAILABLE`, a `DEADLINE_EXCEEDED`). A gRPC client reads an HTTP 504 without
    /// `grpc-status` as `UNAVAILABLE`, which it retries: a deadline that ran out would be
    /// retried. The category statuses and
    /// [`client_errors_as_bad_gateway`](Self::client_errors_as_bad_gateway) do not apply; a
    /// failing response that can be given back is, as it was (a gRPC dependency's).
    ///
    /// ```
    /// use http::Response;
    /// use palisade_core::BoxError;
    /// use palisade_core::failure::DeadlineExceeded;
    /// use palisade_http::respond::Responder;
    /// use std::time::Duration;
    ///
    /// let late: BoxError = Box::new(DeadlineExceeded::with_limit(Duration::from_millis(200)));
    /// let responder = Responder::builder().grpc(true).build().unwrap();
    /// let response: Response<String> = responder.respond(late);
    /// assert_eq!(response.status(), 200);
    /// assert_eq!(response.headers()["content-type"], "application/grpc");
    /// assert_eq!(response.headers()["grpc-status"], "4"); // DEADLINE_EXCEEDED
    /// assert!(response.body().is_empty());
    /// ```
    ///
    /// [`GrpcStatus::from_error`]: crate::grpc::GrpcStatus::from_error
    pub fn grpc(mut self, enabled: bool) -> Self {
        self.responder.grpc = enabled;
        self
    }

    /// Builds the responder.
    ///
    /// # Errors
    /// A [`ConfigError`] naming `status[<category>]` when a status is not a 4xx or 5xx.
    pub fn build(self) -> Result<Responder, ConfigError> {
        match self.invalid {
            Some(err) => Err(err),
            None => Ok(self.responder),
        }
    }

    /// Builds the layer that applies the responder.
    ///
    /// # Errors
    /// As [`build`](Self::build).
    pub fn layer(self) -> Result<ErrorResponseLayer, ConfigError> {
        Ok(ErrorResponseLayer {
            responder: self.build()?,
        })
    }
}

/// Turns the errors of the service below into responses: see [`ErrorResponse`].
///
/// # Behind an HTTP handler: failing fast during an outage
///
/// An open breaker's refusal is answered 503 with `Retry-After` (the time until its next
/// probe), but only once it reaches this layer. palisade's retry layer (in
/// `palisade::preset::recommended`, by default) waits for that probe instead, up to the
/// deadline: with a long deadline (the preset's 30 s, or the caller's through a
/// [`ServerDeadlineLayer`](crate::deadline::ServerDeadlineLayer)), a request that comes during
/// an outage is held until the probe, not answered at once. A server that prefers to fail
/// fast, and let its callers come back when `Retry-After` says, turns the wait off:
///
/// ```
/// use palisade::retry::RetryLayer;
/// use palisade::preset;
///
/// # fn main() -> Result<(), palisade::classify::ConfigError> {
/// let retry = RetryLayer::builder().name("llm").wait_for_breaker(false).build()?;
/// let preset = preset::recommended("llm").retry(retry).build()?;
/// # let _ = preset;
/// # Ok(()) }
/// ```
#[derive(Clone, Copy, Debug, Default)]
pub struct ErrorResponseLayer {
    responder: Responder,
}

impl ErrorResponseLayer {
    /// The layer, with [`Responder::new`]'s mapping.
    pub fn new() -> Self {
        Self::default()
    }

    /// A builder for the mapping; finish it with [`ResponderBuilder::layer`].
    pub fn builder() -> ResponderBuilder {
        Responder::builder()
    }

    /// The layer for a gRPC server: failures answered as gRPC statuses
    /// ([`ResponderBuilder::grpc`]).
    pub fn grpc() -> Self {
        ErrorResponseLayer {
            responder: Responder {
                grpc: true,
                ..Responder::new()
            },
        }
    }
}

impl<S> Layer<S> for ErrorResponseLayer {
    type Service = ErrorResponse<S>;

    fn layer(&self, inner: S) -> ErrorResponse<S> {
        ErrorResponse {
            inner,
            responder: self.responder,
            not_ready: None,
        }
    }
}

/// A service whose errors are responses ([`Responder`]'s) and whose answers are plain
/// responses ([`IntoHttpResponse`]): its error type is `Infallible`, as axum's `Router::layer`
/// and hyper's servers want, with no `HandleErrorLayer`.
///
/// # Example
///
/// ```
/// use http::{Request, Response};
/// use palisade_core::BoxError;
/// use palisade_core::failure::Elapsed;
/// use palisade_http::respond::ErrorResponseLayer;
/// use std::time::Duration;
/// use tower::{ServiceBuilder, ServiceExt, service_fn};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let slow = service_fn(|_: Request<String>| async {
///     Err::<Response<String>, BoxError>(Box::new(Elapsed::with_limit(Duration::from_secs(10))))
/// });
/// let svc = ServiceBuilder::new().layer(ErrorResponseLayer::new()).service(slow);
/// let response = svc.oneshot(Request::new(String::new())).await.unwrap();
/// assert_eq!(response.status(), 504);
/// assert_eq!(
///     response.body(),
///     r#"{"error":{"type":"timeout","message":"attempt timed out after 10 s"}}"#
/// );
/// # }
/// ```
///
/// # Readiness
///
/// Always ready: an error from the inner service's `poll_ready` is kept and answered as the
/// next call's response (that call does not reach the inner service).
pub struct ErrorResponse<S> {
    inner: S,
    responder: Responder,
    /// The error of a failed `poll_ready`, kept for the next call; not copied by `Clone`.
    not_ready: Option<BoxError>,
}

impl<S: Clone> Clone for ErrorResponse<S> {
    fn clone(&self) -> Self {
        // A clone was not the instance that failed to get ready.
        ErrorResponse {
            inner: self.inner.clone(),
            responder: self.responder,
            not_ready: None,
        }
    }
}

impl<S: fmt::Debug> fmt::Debug for ErrorResponse<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ErrorResponse")
            .field("inner", &self.inner)
            .field("responder", &self.responder)
            .finish_non_exhaustive()
    }
}

impl<S> ErrorResponse<S> {
    /// Wraps `inner`.
    pub fn new(inner: S, responder: Responder) -> Self {
        ErrorResponse {
            inner,
            responder,
            not_ready: None,
        }
    }

    /// The inner service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The inner service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// Unwraps the inner service.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S, Req> Service<Req> for ErrorResponse<S>
where
    S: Service<Req>,
    S::Error: Into<BoxError>,
    S::Response: IntoHttpResponse,
    <S::Response as IntoHttpResponse>::Body: From<String> + Send + 'static,
{
    type Response = Response<<S::Response as IntoHttpResponse>::Body>;
    type Error = Infallible;
    type Future = ErrorResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        if self.not_ready.is_some() {
            return Poll::Ready(Ok(()));
        }
        match ready!(self.inner.poll_ready(cx)) {
            Ok(()) => {}
            Err(e) => self.not_ready = Some(e.into()),
        }
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Req) -> Self::Future {
        let inner = match self.not_ready.take() {
            Some(err) => Inner::NotReady { err: Some(err) },
            None => Inner::Called {
                future: self.inner.call(req),
            },
        };
        ErrorResponseFuture {
            inner,
            responder: self.responder,
        }
    }
}

pin_project! {
    /// The response future of [`ErrorResponse`].
    pub struct ErrorResponseFuture<F> {
        #[pin]
        inner: Inner<F>,
        responder: Responder,
    }
}

pin_project! {
    #[project = InnerProj]
    enum Inner<F> {
        Called { #[pin] future: F },
        NotReady { err: Option<BoxError> },
    }
}

impl<F> fmt::Debug for ErrorResponseFuture<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ErrorResponseFuture")
            .finish_non_exhaustive()
    }
}

impl<F, R, E> Future for ErrorResponseFuture<F>
where
    F: Future<Output = Result<R, E>>,
    E: Into<BoxError>,
    R: IntoHttpResponse,
    R::Body: From<String> + Send + 'static,
{
    type Output = Result<Response<R::Body>, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let err = match this.inner.project() {
            InnerProj::Called { future } => match ready!(future.poll(cx)) {
                Ok(response) => return Poll::Ready(Ok(response.into_http_response())),
                Err(e) => e.into(),
            },
            InnerProj::NotReady { err } => err
                .take()
                .unwrap_or_else(|| "error response future polled after completion".into()),
        };
        Poll::Ready(Ok(this.responder.respond(err)))
    }
}

/// A palisade failure as a response: [`Responder::new`]'s, as axum's `IntoResponse` with the
/// `axum` feature (`Result<T, HttpError>` handlers, `?` on a `BoxError`).
///
/// A failing response of the dependency (a classify layer's [`FailedResponse`]) is answered as
/// it was, status, headers and body, less the hop-by-hop headers an intermediary must not
/// forward (RFC 9110 §7.6.1), when its body type is one the responder can give back as
/// axum's `Body`: axum's own, hyper's `Incoming` (a hyper-util client's), http-body-util's
/// `Full<Bytes>` and boxed bodies, and the others listed in [`Responder`]'s
/// [Which failing responses pass through](Responder#which-failing-responses-pass-through),
/// which also says what to do for another body type.
///
/// ```
/// # #[cfg(feature = "axum")]
/// # fn main() {
/// use axum::response::IntoResponse;
/// use bytes::Bytes;
/// use http::Response;
/// use http_body_util::Full;
/// use palisade_core::{Category, Class, FailedResponse};
/// use palisade_http::HttpError;
///
/// // What a classify layer over a client answering `Full<Bytes>` bodies fails with.
/// let overloaded = Response::builder()
///     .status(503)
///     .body(Full::new(Bytes::from_static(br#"{"error":"overloaded"}"#)))
///     .unwrap();
/// let err = HttpError::from(FailedResponse::new(overloaded, Class::new(Category::ServerError)));
/// let response = err.into_response();
/// assert_eq!(response.status(), 503);
/// # }
/// # #[cfg(not(feature = "axum"))]
/// # fn main() {}
/// ```
#[derive(Debug)]
pub struct HttpError(pub BoxError);

impl<E: Into<BoxError>> From<E> for HttpError {
    fn from(err: E) -> Self {
        HttpError(err.into())
    }
}

impl HttpError {
    /// The response, with any body that can be made from a `String`.
    pub fn into_response_with<B: From<String> + Send + 'static>(self) -> Response<B> {
        Responder::new().respond(self.0)
    }
}

/// A fallback's [`Answer`] as a response ([`IntoHttpResponse`]'s), as axum's `IntoResponse`
/// with the `axum` feature.
#[derive(Debug)]
pub struct HttpAnswer<R>(pub Answer<R>);

#[cfg(feature = "axum")]
mod axum_impls {
    use std::convert::Infallible;

    use axum::body::Body;
    use axum::response::{IntoResponse, Response};
    use bytes::Bytes;
    use http_body_util::combinators::{BoxBody, UnsyncBoxBody};
    use http_body_util::{Empty, Full};
    use palisade_core::{BoxError, FailedResponse};

    use super::{HttpAnswer, HttpError, X_PALISADE_DEGRADED};
    use crate::body::GuardedBody;
    use palisade_fallback::Answer;

    /// Tries each body type in turn: the failing response as axum's, or `err` unchanged.
    macro_rules! restore_each {
        ($err:ident, $convert:path: $($body:ty),+ $(,)?) => {$(
            let $err = match FailedResponse::<http::Response<$body>>::restore($err) {
                Ok(response) => return Ok(response.map($convert)),
                Err(err) => err,
            };
        )+};
    }

    /// The failing response `err` carries, as axum's, when its body is one of those listed in
    /// `Responder`'s docs; `err` unchanged otherwise. A type comparison per body type, on the
    /// failure path only.
    pub(super) fn restore(err: BoxError) -> Result<Response, BoxError> {
        restore_each!(err, Body::new:
            Body,
            Full<Bytes>,
            Empty<Bytes>,
            BoxBody<Bytes, BoxError>,
            BoxBody<Bytes, Infallible>,
            BoxBody<Bytes, axum::Error>,
            UnsyncBoxBody<Bytes, BoxError>,
            UnsyncBoxBody<Bytes, Infallible>,
            UnsyncBoxBody<Bytes, axum::Error>,
            String,
            GuardedBody<Body>,
            GuardedBody<Full<Bytes>>,
            GuardedBody<Empty<Bytes>>,
            GuardedBody<BoxBody<Bytes, BoxError>>,
            GuardedBody<BoxBody<Bytes, Infallible>>,
            GuardedBody<BoxBody<Bytes, axum::Error>>,
            GuardedBody<UnsyncBoxBody<Bytes, BoxError>>,
            GuardedBody<UnsyncBoxBody<Bytes, Infallible>>,
            GuardedBody<UnsyncBoxBody<Bytes, axum::Error>>,
            GuardedBody<String>,
        );
        #[cfg(feature = "hyper")]
        restore_each!(err, Body::new:
            hyper::body::Incoming,
            BoxBody<Bytes, hyper::Error>,
            UnsyncBoxBody<Bytes, hyper::Error>,
            GuardedBody<hyper::body::Incoming>,
            GuardedBody<BoxBody<Bytes, hyper::Error>>,
            GuardedBody<UnsyncBoxBody<Bytes, hyper::Error>>,
        );
        restore_each!(err, Body::from: Bytes, Vec<u8>, &'static str);
        Err(err)
    }

    impl IntoResponse for HttpError {
        fn into_response(self) -> Response {
            self.into_response_with()
        }
    }

    impl<R: IntoResponse> IntoResponse for HttpAnswer<R> {
        fn into_response(self) -> Response {
            match self.0 {
                Answer::Primary(r) => r.into_response(),
                Answer::Restored { response, .. } => {
                    let mut response = response.into_response();
                    super::remove_hop_by_hop(response.headers_mut());
                    response
                }
                Answer::Fallback { response, degraded } => {
                    let mut response = response.into_response();
                    if let Ok(v) = http::HeaderValue::from_str(degraded.strategy) {
                        response.headers_mut().insert(X_PALISADE_DEGRADED, v);
                    }
                    response.extensions_mut().insert(degraded);
                    response
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use palisade_core::failure::{BreakerState, DeadlineExceeded, Elapsed};
    use palisade_core::{Class, Classified};
    use palisade_fallback::Degraded;

    fn respond(err: BoxError) -> Response<String> {
        Responder::new().respond(err)
    }

    #[test]
    fn statuses_by_type_and_class() {
        let open = CircuitOpen::new(
            "llm".into(),
            BreakerState::Open,
            Some(Duration::from_millis(480)),
        );
        let r = respond(Box::new(open));
        assert_eq!(r.status(), 503);
        assert_eq!(r.headers()["retry-after"], "1");
        assert_eq!(r.headers()["retry-after-ms"], "480");
        assert_eq!(r.headers()["x-should-retry"], "true");
        assert_eq!(r.headers()["content-type"], "application/json");

        let isolated = CircuitOpen::new("llm".into(), BreakerState::Isolated, None);
        let r = respond(Box::new(isolated));
        assert_eq!(r.status(), 503);
        assert!(r.headers().get("retry-after").is_none());
        assert_eq!(r.headers()["x-should-retry"], "false");

        let r = respond(Box::new(Elapsed::with_limit(Duration::from_secs(10))));
        assert_eq!(r.status(), 504);
        assert_eq!(
            r.body(),
            r#"{"error":{"type":"timeout","message":"attempt timed out after 10 s"}}"#
        );
        let r = respond(Box::new(DeadlineExceeded::with_limit(Duration::from_secs(
            30,
        ))));
        assert_eq!(r.status(), 504);
        assert_eq!(r.headers()["x-should-retry"], "false");
        assert_eq!(
            r.body(),
            r#"{"error":{"type":"timeout","message":"deadline of 30 s exceeded"}}"#
        );
        assert_eq!(
            respond(Box::new(NoHealthyEndpoint { retry_after: None })).status(),
            503
        );

        let limited = Classified::new(
            Class::new(Category::RateLimited).with_retry_after(Duration::from_secs(2)),
            "slow down",
        );
        let r = respond(Box::new(limited));
        assert_eq!(r.status(), 429);
        assert_eq!(r.headers()["retry-after"], "2");
        assert_eq!(r.headers()["retry-after-ms"], "2000");

        let io: BoxError = Box::new(std::io::Error::from(std::io::ErrorKind::ConnectionRefused));
        assert_eq!(respond(io).status(), 502);
        let odd: BoxError = "something odd".into();
        let r = respond(odd);
        assert_eq!(r.status(), 500);
        assert_eq!(r.headers()["x-should-retry"], "true"); // unknown: retryable
    }

    /// A retry's final error after timed-out attempts is answered as the error it carries: a
    /// failing response given back, a refusal a 503 with its wait.
    #[test]
    fn the_error_under_the_timeouts_marker_is_answered() {
        let marked = |inner: BoxError| -> BoxError { Box::new(AfterTimeouts::new(2, inner)) };
        let failed = FailedResponse::new(
            Response::builder()
                .status(502)
                .body("bad gateway".to_owned())
                .unwrap(),
            Class::new(Category::Network),
        );
        let r = respond(marked(Box::new(failed)));
        assert_eq!(
            (r.status(), r.body().as_str()),
            (StatusCode::BAD_GATEWAY, "bad gateway")
        );
        // A refusal by its type, whatever the table says of its class, also inside a failed
        // fallback.
        let teapot = Responder::builder()
            .status(Category::Rejected, StatusCode::IM_A_TEAPOT)
            .build()
            .unwrap();
        let off = || -> BoxError {
            Box::new(FeatureOff {
                feature: "search".to_owned(),
            })
        };
        let r: Response<String> = teapot.respond(marked(off()));
        assert_eq!(r.status(), 503);
        let r: Response<String> =
            teapot.respond(Box::new(FallbackFailed::new(marked(off()), Vec::new())));
        assert_eq!(r.status(), 503);
        let r = respond(marked(Box::new(NoHealthyEndpoint { retry_after: None })));
        assert_eq!(r.status(), 503);
    }

    /// A wait too long to state in whole seconds rounded up (`Duration::MAX`, "not before the
    /// end of time") saturates: never a panic, and never wraps round to `Retry-After: 0`.
    #[test]
    fn the_longest_wait_saturates_its_retry_after() {
        let never = Classified::new(
            Class::new(Category::RateLimited).with_retry_after(Duration::MAX),
            "come back never",
        );
        let r = respond(Box::new(never));
        assert_eq!(r.headers()["retry-after"], u64::MAX.to_string().as_str());
        assert_eq!(r.headers()["retry-after-ms"], u64::MAX.to_string().as_str());
    }

    #[test]
    fn failed_responses_are_restored_also_from_a_failed_fallback() {
        let original = Response::builder()
            .status(503)
            .header("x-upstream", "1")
            .body("busy".to_owned())
            .unwrap();
        let failed: BoxError = Box::new(FailedResponse::new(
            original,
            Class::new(Category::ServerError),
        ));
        let r = respond(failed);
        assert_eq!((r.status().as_u16(), r.body().as_str()), (503, "busy"));
        assert_eq!(r.headers()["x-upstream"], "1");

        let original = Response::builder()
            .status(429)
            .body("later".to_owned())
            .unwrap();
        let failed: BoxError = Box::new(FailedResponse::new(
            original,
            Class::new(Category::RateLimited),
        ));
        let fallback_failed: BoxError = Box::new(FallbackFailed::new(
            failed,
            vec![("static", "no page".into())],
        ));
        let r = respond(fallback_failed);
        assert_eq!((r.status().as_u16(), r.body().as_str()), (429, "later"));

        // A failed fallback over an error: answered for the original's class.
        let fallback_failed: BoxError = Box::new(FallbackFailed::new(
            Box::new(Elapsed::new()),
            vec![("static", "no page".into())],
        ));
        assert_eq!(respond(fallback_failed).status(), 504);
    }

    /// A 503 whose headers speak for the dependency's connection as well as for the response,
    /// as an upstream closing its connection sends it.
    fn hop_by_hop_503<B>(body: B) -> Response<B> {
        Response::builder()
            .status(503)
            .header("connection", "close, X-Upstream-Hop")
            .header("keep-alive", "timeout=5")
            .header("x-upstream-hop", "1")
            .header("upgrade", "h2c")
            .header("retry-after", "2")
            .header("content-type", "text/plain")
            .body(body)
            .unwrap()
    }

    /// The header names of `r`, sorted.
    fn names<B>(r: &Response<B>) -> Vec<&str> {
        let mut names: Vec<&str> = r.headers().keys().map(HeaderName::as_str).collect();
        names.sort_unstable();
        names
    }

    /// RFC 9110 §7.6.1: a failing response passed back loses its hop-by-hop headers, those
    /// `Connection` names included; left in, the dependency's `Connection: close` would close
    /// the caller's connection to this server. The end-to-end ones and the body pass.
    #[tokio::test]
    async fn failing_responses_pass_through_without_their_hop_by_hop_headers() {
        use tower::ServiceExt;
        let failed = || -> BoxError {
            Box::new(FailedResponse::new(
                hop_by_hop_503("busy".to_owned()),
                Class::new(Category::ServerError),
            ))
        };
        let kept = vec!["content-type", "retry-after"];

        let r = respond(failed());
        assert_eq!((r.status().as_u16(), r.body().as_str()), (503, "busy"));
        assert_eq!(names(&r), kept);
        assert_eq!(r.headers()["retry-after"], "2");
        assert_eq!(r.headers()["content-type"], "text/plain");

        // Inside a failed fallback.
        let r = respond(Box::new(FallbackFailed::new(
            failed(),
            vec![("static", "no page".into())],
        )));
        assert_eq!((r.status().as_u16(), r.body().as_str()), (503, "busy"));
        assert_eq!(names(&r), kept);

        // Through the layer.
        let svc = ErrorResponseLayer::new().layer(tower::service_fn(move |_: ()| async move {
            Err::<Response<String>, BoxError>(failed())
        }));
        let r = svc.oneshot(()).await.unwrap();
        assert_eq!((r.status().as_u16(), r.body().as_str()), (503, "busy"));
        assert_eq!(names(&r), kept);

        // Handed back by a fallback layer that had no fallback for it.
        let answer = Answer::Restored {
            response: hop_by_hop_503("busy".to_owned()),
            class: Class::new(Category::ServerError),
        };
        let r = answer.into_http_response();
        assert_eq!((r.status().as_u16(), r.body().as_str()), (503, "busy"));
        assert_eq!(names(&r), kept);

        // The other hop-by-hop headers, and names `Connection` lists across several values,
        // in any case, with spaces.
        let response = Response::builder()
            .status(502)
            .header("connection", "Keep-Alive ,x-a")
            .header("connection", "X-B")
            .header("proxy-connection", "keep-alive")
            .header("te", "trailers")
            .header("trailer", "grpc-status")
            .header("transfer-encoding", "chunked")
            .header("x-a", "1")
            .header("x-b", "2")
            .header("x-c", "3")
            .header("grpc-status", "14")
            .body(String::new())
            .unwrap();
        let r = respond(Box::new(FailedResponse::new(
            response,
            Class::new(Category::ServerError),
        )));
        // `Trailer` is end-to-end: without it hyper sends no trailers on HTTP/1.1.
        assert_eq!(names(&r), vec!["grpc-status", "trailer", "x-c"]);
        // Unless `Connection` names it.
        let response = Response::builder()
            .status(502)
            .header("connection", "trailer")
            .header("trailer", "x-checksum")
            .body(String::new())
            .unwrap();
        let r = respond(Box::new(FailedResponse::new(
            response,
            Class::new(Category::ServerError),
        )));
        assert!(r.headers().is_empty(), "{:?}", r.headers());
    }

    /// A gRPC server's failures are gRPC statuses (Trailers-Only): a deadline that ran out is
    /// `DEADLINE_EXCEEDED`, which a client does not read as `UNAVAILABLE` (what it makes of
    /// an HTTP 504 without `grpc-status`); an open breaker `UNAVAILABLE` with its pushback; a
    /// rate limit `RESOURCE_EXHAUSTED`; the message percent-encoded, or left out.
    #[tokio::test]
    async fn a_grpc_server_answers_its_failures_as_grpc_statuses() {
        use crate::grpc::{Code, GrpcStatus};
        use palisade_core::failure::{BreakerState, DeadlineExceeded};
        use tower::ServiceExt;
        let grpc = Responder::builder().grpc(true).build().unwrap();
        let late: BoxError = Box::new(AfterTimeouts::new(
            2,
            Box::new(DeadlineExceeded::with_limit(Duration::from_millis(200))),
        ));
        let r: Response<String> = grpc.respond(late);
        assert_eq!(r.status(), 200);
        assert_eq!(r.headers()["content-type"], "application/grpc");
        assert_eq!(r.headers()["grpc-status"], "4");
        assert!(r.body().is_empty());
        assert!(!r.headers().contains_key("retry-after"));
        let read = GrpcStatus::from_headers(r.headers()).unwrap();
        assert_eq!(read.code, Code::DeadlineExceeded);
        assert!(!read.message.is_empty());
        // Through the layer, an open breaker.
        let svc = ErrorResponseLayer::grpc().layer(tower::service_fn(|_: ()| async {
            Err::<Response<String>, BoxError>(Box::new(CircuitOpen::new(
                "greeter".into(),
                BreakerState::Open,
                Some(Duration::from_millis(480)),
            )))
        }));
        let r = svc.oneshot(()).await.unwrap();
        assert_eq!(r.headers()["grpc-status"], "14");
        assert_eq!(r.headers()["grpc-retry-pushback-ms"], "480");
        assert_eq!(
            r.headers()["grpc-message"],
            "circuit 'greeter' open, retry in 480 ms"
        );
        // A rate limit, its message percent-encoded; without messages, none.
        let limited = || -> BoxError {
            Box::new(palisade_core::Classified::new(
                Class::new(Category::RateLimited).with_retry_after(Duration::from_secs(2)),
                "quota 100% used \u{e9}t\u{e9}\n",
            ))
        };
        let r: Response<String> = grpc.respond(limited());
        assert_eq!(r.headers()["grpc-status"], "8");
        assert_eq!(r.headers()["grpc-retry-pushback-ms"], "2000");
        assert_eq!(
            r.headers()["grpc-message"],
            "quota 100%25 used %C3%A9t%C3%A9%0A"
        );
        assert_eq!(
            GrpcStatus::from_headers(r.headers()).unwrap().message,
            "quota 100% used \u{e9}t\u{e9}\n"
        );
        let quiet = Responder::builder()
            .grpc(true)
            .messages(false)
            .build()
            .unwrap();
        let r: Response<String> = quiet.respond(limited());
        assert!(!r.headers().contains_key("grpc-message"));
        // A failure that may not be retried gets no pushback when its code says so already...
        let bad: BoxError = Box::new(palisade_core::Classified::new(
            Class::new(Category::Validation),
            "no such field",
        ));
        let r: Response<String> = grpc.respond(bad);
        assert_eq!(r.headers()["grpc-status"], "3");
        assert!(!r.headers().contains_key("grpc-retry-pushback-ms"));
        // ... and a negative one, "do not retry", where a client's retry policy may list its
        // code: an isolated breaker, a feature switched off (`UNAVAILABLE`), a deadline that
        // ran out (`DEADLINE_EXCEEDED`). A palisade client reads it as not retryable.
        let isolated: BoxError = Box::new(CircuitOpen::new(
            "greeter".into(),
            BreakerState::Isolated,
            None,
        ));
        let off: BoxError = Box::new(FeatureOff {
            feature: "search".into(),
        });
        let late: BoxError = Box::new(DeadlineExceeded::with_limit(Duration::from_millis(200)));
        for (err, code) in [(isolated, "14"), (off, "14"), (late, "4")] {
            let r: Response<String> = grpc.respond(err);
            assert_eq!(r.headers()["grpc-status"], code);
            assert_eq!(
                r.headers()["grpc-retry-pushback-ms"],
                "-1",
                "{:?}",
                r.headers()
            );
            let (read, _) = crate::grpc::GrpcClassifier::new()
                .classify_trailers(r.headers())
                .unwrap();
            assert!(!read.retryable, "{read:?}");
        }
        // A gRPC dependency's failing response passes through as it was.
        let response = Response::builder()
            .status(200)
            .header("content-type", "application/grpc")
            .header("grpc-status", "14")
            .body(String::new())
            .unwrap();
        let r: Response<String> = grpc.respond(Box::new(FailedResponse::new(
            response,
            Class::new(Category::Network),
        )));
        assert_eq!(r.headers()["grpc-status"], "14");
    }

    #[test]
    fn a_successful_answer_keeps_its_headers() {
        let r = Answer::Primary(hop_by_hop_503(String::new())).into_http_response();
        assert_eq!(r.headers().len(), 6);
    }

    #[test]
    fn messages_are_json_escaped_or_left_out() {
        let r = respond("a \"quoted\"\nline\u{1}".into());
        assert!(
            r.body()
                .ends_with(r#""message":"a \"quoted\"\nline\u0001"}}"#),
            "{}",
            r.body()
        );
        let quiet = Responder::builder().messages(false).build().unwrap();
        let r: Response<String> = quiet.respond("secret".into());
        assert!(!r.body().contains("secret"));
    }

    /// Opted in, a dependency's 4xx given back is answered 502, also from a failed
    /// fallback and through the layer; a 429 and a 5xx still pass through; by default every
    /// one does.
    #[tokio::test]
    async fn a_dependencys_client_error_can_be_answered_as_bad_gateway() {
        use tower::ServiceExt;
        let failed = |status: u16, category: Category| -> BoxError {
            let response = Response::builder()
                .status(status)
                .header("www-authenticate", "Bearer")
                .body(format!("dependency's {status}"))
                .unwrap();
            Box::new(FailedResponse::new(response, Class::new(category)))
        };
        let opted = Responder::builder()
            .client_errors_as_bad_gateway(true)
            .build()
            .unwrap();
        for (status, category) in [
            (401, Category::Authentication),
            (404, Category::NotFound),
            (422, Category::Validation),
        ] {
            let given_back: Response<String> = respond(failed(status, category));
            assert_eq!(given_back.status(), status);
            assert_eq!(given_back.body(), &format!("dependency's {status}"));
            let r: Response<String> = opted.respond(failed(status, category));
            assert_eq!(r.status(), 502, "{status}");
            assert!(!r.headers().contains_key("www-authenticate"), "{status}");
            assert_eq!(r.headers()["x-should-retry"], "false");
            let reason = StatusCode::from_u16(status).unwrap();
            assert_eq!(
                r.body(),
                &format!(
                    r#"{{"error":{{"type":"{}","message":"the dependency answered {reason}"}}}}"#,
                    category.as_str()
                )
            );
            let fallback_failed: BoxError = Box::new(FallbackFailed::new(
                failed(status, category),
                vec![("static", "no page".into())],
            ));
            let r: Response<String> = opted.respond(fallback_failed);
            assert_eq!(r.status(), 502, "{status}");
        }
        for (status, category) in [(429, Category::RateLimited), (503, Category::ServerError)] {
            let r: Response<String> = opted.respond(failed(status, category));
            assert_eq!(r.status(), status);
            assert_eq!(r.body(), &format!("dependency's {status}"));
        }
        // Through the layer.
        let layer = ErrorResponseLayer::builder()
            .client_errors_as_bad_gateway(true)
            .layer()
            .unwrap();
        let svc = layer.layer(tower::service_fn(move |_: ()| async move {
            Err::<Response<String>, BoxError>(failed(404, Category::NotFound))
        }));
        assert_eq!(svc.oneshot(()).await.unwrap().status(), 502);
    }

    #[test]
    fn statuses_can_be_changed_but_not_to_successes() {
        let r = Responder::builder()
            .status(Category::Unknown, StatusCode::SERVICE_UNAVAILABLE)
            .build()
            .unwrap();
        let resp: Response<String> = r.respond("something odd".into());
        assert_eq!(resp.status(), 503);
        let err = Responder::builder()
            .status(Category::Timeout, StatusCode::OK)
            .build()
            .unwrap_err();
        assert_eq!(err.field(), "status[timeout]");
    }

    #[test]
    fn every_category_gets_the_status_of_the_table() {
        let expected = |c: Category| match c {
            Category::Timeout => 504,
            Category::RateLimited => 429,
            Category::Rejected | Category::ResourceExhausted | Category::Transient => 503,
            Category::ServerError | Category::Network => 502,
            _ => 500,
        };
        let responder = Responder::new();
        for category in Category::ALL {
            assert_eq!(responder.status(category), expected(category), "{category}");
            let err: BoxError = Box::new(Classified::new(Class::new(category), "failed"));
            assert_eq!(respond(err).status(), expected(category), "{category}");
        }
    }

    #[tokio::test]
    async fn a_built_layer_applies_its_mapping() {
        use tower::ServiceExt;
        let failing = tower::service_fn(|_: ()| async {
            Err::<Response<String>, BoxError>("something odd".into())
        });
        let layer = ErrorResponseLayer::builder()
            .status(Category::Unknown, StatusCode::SERVICE_UNAVAILABLE)
            .messages(false)
            .layer()
            .unwrap();
        let r = layer.layer(failing).oneshot(()).await.unwrap();
        assert_eq!(r.status(), 503);
        assert_eq!(r.body(), r#"{"error":{"type":"unknown"}}"#);
        let err = ErrorResponseLayer::builder()
            .status(Category::Unknown, StatusCode::NO_CONTENT)
            .layer()
            .unwrap_err();
        assert_eq!(err.field(), "status[unknown]");
    }

    /// tower's middleware on a server, below this layer: a dead `Buffer` is a 503 (the
    /// service is unavailable, for now), as a shed load is; tower's timeout a 504.
    #[tokio::test(start_paused = true)]
    async fn towers_own_middleware_errors_get_their_statuses() {
        use tower::{ServiceBuilder, ServiceExt};
        let handler = || {
            tower::service_fn(|_: ()| async {
                tokio::time::sleep(Duration::from_secs(1)).await;
                Ok::<_, BoxError>(Response::new("done".to_owned()))
            })
        };
        // The buffer's worker is gone.
        let (buffer, worker) = tower::buffer::Buffer::pair(handler(), 4);
        drop(worker);
        let r = ErrorResponseLayer::new()
            .layer(buffer)
            .oneshot(())
            .await
            .unwrap();
        assert_eq!(r.status(), 503, "{}", r.body());
        assert_eq!(
            r.body(),
            r#"{"error":{"type":"transient","message":"buffer's worker closed unexpectedly"}}"#
        );
        assert_eq!(r.headers()["x-should-retry"], "true");
        // The buffered service failed to get ready.
        struct FailsReady;
        impl Service<()> for FailsReady {
            type Response = Response<String>;
            type Error = BoxError;
            type Future = std::future::Ready<Result<Response<String>, BoxError>>;
            fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
                Poll::Ready(Err("the pool said no".into()))
            }
            fn call(&mut self, _: ()) -> Self::Future {
                std::future::ready(Ok(Response::new(String::new())))
            }
        }
        let buffer = tower::buffer::Buffer::new(FailsReady, 4);
        let r = ErrorResponseLayer::new()
            .layer(buffer)
            .oneshot(())
            .await
            .unwrap();
        assert_eq!(r.status(), 503, "{}", r.body());
        assert!(r.body().contains("buffered service failed"), "{}", r.body());
        // A load shed; tower's timeout.
        let shed = ServiceBuilder::new()
            .layer(ErrorResponseLayer::new())
            .load_shed()
            .concurrency_limit(1)
            .service(handler());
        let mut busy = shed.clone();
        let first = busy.ready().await.unwrap().call(());
        let r = shed.clone().oneshot(()).await.unwrap();
        assert_eq!(r.status(), 503, "{}", r.body());
        assert!(r.body().contains("overloaded"), "{}", r.body());
        assert_eq!(first.await.unwrap().status(), 200);
        let timed = ServiceBuilder::new()
            .layer(ErrorResponseLayer::new())
            .timeout(Duration::from_millis(100))
            .service(handler());
        let r = timed.oneshot(()).await.unwrap();
        assert_eq!(r.status(), 504, "{}", r.body());
    }

    #[test]
    fn the_service_and_its_future_say_what_they_are_in_debug() {
        let svc = ErrorResponseLayer::new().layer(tower::service_fn(|_: ()| async {
            Ok::<_, BoxError>(Response::new(String::new()))
        }));
        let shown = format!("{svc:?}");
        assert!(shown.starts_with("ErrorResponse { inner: "), "{shown}");
        assert!(shown.contains("responder: Responder {"), "{shown}");
        assert!(shown.contains("messages: true"), "{shown}");
        let mut svc = svc;
        assert_eq!(format!("{:?}", svc.call(())), "ErrorResponseFuture { .. }");
    }

    #[test]
    fn degraded_answers_are_marked() {
        let degraded = Degraded {
            class: Class::new(Category::ServerError),
            strategy: "static",
        };
        let answer = Answer::Fallback {
            response: Response::new(String::from("cached")),
            degraded,
        };
        let r = answer.into_http_response();
        assert_eq!(r.headers()[X_PALISADE_DEGRADED], "static");
        assert_eq!(r.extensions().get::<Degraded>(), Some(&degraded));
        let r = Answer::Primary(Response::new(String::new())).into_http_response();
        assert!(r.headers().get(X_PALISADE_DEGRADED).is_none());
    }

    /// With axum's `Body` as the answer's body (`HttpError`'s `IntoResponse`), a failing
    /// response passes through as it was, status, headers and body, whatever common body type
    /// the client gave it, also inside a failed fallback; an unknown body type is answered by
    /// its class.
    #[cfg(feature = "axum")]
    #[tokio::test]
    async fn failing_responses_of_common_body_types_pass_through_as_axum_s() {
        use axum::body::Body;
        use axum::response::IntoResponse;
        use bytes::Bytes;
        use http_body_util::combinators::{BoxBody, UnsyncBoxBody};
        use http_body_util::{BodyExt, Empty, Full};

        fn failed<T: Send + 'static>(body: T) -> BoxError {
            let response = Response::builder()
                .status(503)
                .header("retry-after-ms", "5000")
                .body(body)
                .unwrap();
            Box::new(
                FailedResponse::new(response, Class::new(Category::ServerError))
                    .with_summary("HTTP 503 Service Unavailable"),
            )
        }
        async fn text(response: axum::response::Response) -> (u16, String, String) {
            let status = response.status().as_u16();
            let hint = response
                .headers()
                .get("retry-after-ms")
                .map_or("", |v| v.to_str().unwrap())
                .to_owned();
            let body = response.into_body().collect().await.unwrap().to_bytes();
            (status, hint, String::from_utf8(body.to_vec()).unwrap())
        }
        const SENT: &str = r#"{"error":"overloaded"}"#;
        let full = || Full::new(Bytes::from_static(SENT.as_bytes()));
        // What a `GuardLayer` below the classify layer gives.
        let guard =
            crate::body::GuardLayer::new().layer(tower::service_fn(move |_: ()| async move {
                Ok::<_, BoxError>(Response::new(full()))
            }));
        let guarded = tower::ServiceExt::oneshot(guard, ())
            .await
            .unwrap()
            .into_body();
        let cases: Vec<(&str, BoxError)> = vec![
            ("axum", failed(Body::from(SENT))),
            ("full", failed(full())),
            ("box", failed(BoxBody::new(full().map_err(BoxError::from)))),
            ("box infallible", failed(BoxBody::new(full()))),
            (
                "unsync box",
                failed(UnsyncBoxBody::new(full().map_err(BoxError::from))),
            ),
            ("unsync infallible", failed(UnsyncBoxBody::new(full()))),
            ("string", failed(SENT.to_owned())),
            ("bytes", failed(Bytes::from_static(SENT.as_bytes()))),
            ("vec", failed(SENT.as_bytes().to_vec())),
            ("str", failed(SENT)),
            ("guarded full", failed(guarded)),
        ];
        for (name, err) in cases {
            let answer = text(HttpError(err).into_response()).await;
            let expected = (503, "5000".to_owned(), SENT.to_owned());
            assert_eq!(answer, expected, "{name}");
        }
        // Empty bodies too.
        let answer = text(HttpError(failed(Empty::<Bytes>::new())).into_response()).await;
        assert_eq!(answer, (503, "5000".to_owned(), String::new()));
        // Inside a failed fallback; and through the responder asked for axum's `Body`.
        let in_fallback: BoxError = Box::new(FallbackFailed::new(
            failed(full()),
            vec![("static", "no page".into())],
        ));
        let answer = text(HttpError(in_fallback).into_response()).await;
        assert_eq!(answer.2, SENT);
        let r: Response<Body> = Responder::new().respond(failed(full()));
        assert_eq!(text(r).await.2, SENT);
        // A body type nobody knows: answered by its class, its summary as the message.
        #[derive(Debug)]
        struct Unknown;
        let answer = text(HttpError(failed(Unknown)).into_response()).await;
        assert_eq!(answer.0, 502);
        assert!(
            answer.2.contains("HTTP 503 Service Unavailable"),
            "{}",
            answer.2
        );
    }

    /// As axum's `Body` too (`HttpError`, `HttpAnswer`): the hop-by-hop headers are dropped,
    /// the end-to-end ones and the body kept.
    #[cfg(feature = "axum")]
    #[tokio::test]
    async fn failing_responses_lose_their_hop_by_hop_headers_as_axum_s() {
        use axum::response::IntoResponse;
        use bytes::Bytes;
        use http_body_util::{BodyExt, Full};

        let full = || Full::new(Bytes::from_static(b"busy"));
        let failed = FailedResponse::new(hop_by_hop_503(full()), Class::new(Category::ServerError));
        let r = HttpError::from(failed).into_response();
        assert_eq!(r.status(), 503);
        assert_eq!(names(&r), vec!["content-type", "retry-after"]);
        assert_eq!(r.into_body().collect().await.unwrap().to_bytes(), "busy");

        let restored = HttpAnswer(Answer::Restored {
            response: hop_by_hop_503(full()),
            class: Class::new(Category::ServerError),
        });
        let r = restored.into_response();
        assert_eq!(r.status(), 503);
        assert_eq!(names(&r), vec!["content-type", "retry-after"]);
        assert_eq!(r.into_body().collect().await.unwrap().to_bytes(), "busy");
    }

    /// Fails `poll_ready` once, then answers 200; counts its calls.
    #[derive(Clone, Default)]
    struct NotReadyOnce {
        failed: bool,
        calls: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    }

    impl Service<()> for NotReadyOnce {
        type Response = Response<String>;
        type Error = BoxError;
        type Future = std::future::Ready<Result<Response<String>, BoxError>>;

        fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
            if std::mem::replace(&mut self.failed, true) {
                Poll::Ready(Ok(()))
            } else {
                Poll::Ready(Err(Box::new(Elapsed::new())))
            }
        }

        fn call(&mut self, _: ()) -> Self::Future {
            self.calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            std::future::ready(Ok(Response::new("ok".to_owned())))
        }
    }

    #[tokio::test]
    async fn a_poll_ready_error_answers_the_next_call_and_is_not_cloned() {
        use tower::ServiceExt;
        let inner = NotReadyOnce::default();
        let calls = inner.calls.clone();
        let mut svc = ErrorResponseLayer::new().layer(inner);
        let ready = svc.ready().await.unwrap();
        // A clone made now does not inherit the kept error.
        let clone = ready.clone();
        let r = ready.call(()).await.unwrap();
        assert_eq!(r.status(), 504);
        assert_eq!(calls.load(std::sync::atomic::Ordering::SeqCst), 0);
        let r = clone.oneshot(()).await.unwrap();
        assert_eq!(r.status(), 200);
        let r = svc.oneshot(()).await.unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(calls.load(std::sync::atomic::Ordering::SeqCst), 2);
    }
}
