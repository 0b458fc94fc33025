//! gRPC over HTTP/2: [`GrpcClassifier`] for `grpc-status`, its [`Code`]s, and the
//! `grpc-timeout` header's format.
//!
//! A gRPC call's status travels in `grpc-status` (with `grpc-message`): in the response's
//! headers when the server answers with no message at all ("trailers-only", the shape of most
//! failures), otherwise in the trailers after the body. [`GrpcClassifier`] classifies the
//! first when the response arrives; the trailers come later, and
//! [`GuardLayer::grpc_trailers`](crate::body::GuardLayer::grpc_trailers) reads them as the body
//! ends. Codes and their meaning are those of
//! [gRPC's status codes](https://grpc.github.io/grpc/core/md_doc_statuscodes.html).
//!
//! # tonic clients
//!
//! palisade's layers go between a tonic client (what tonic-build generates, over
//! `tonic::client::Grpc`) and its `Channel`, outermost first:
//!
//! 1. **a `map_result` that gives tonic statuses**: a failing response restored with
//!    [`FailedResponse::restore`](palisade_core::FailedResponse::restore), any other error
//!    turned into the `tonic::Status` palisade recommends for it
//!    ([`GrpcStatus::from_error`]);
//! 2. [`ServerDeadlineLayer`](crate::deadline::ServerDeadlineLayer): a `grpc-timeout` the
//!    caller set (`Request::set_timeout`) becomes the whole call's deadline, where the
//!    `Channel` alone would apply it to each attempt (see
//!    [`deadline`](crate::deadline#a-limit-the-caller-set-on-the-request));
//! 3. [`ReplayLayer`](crate::body::ReplayLayer): tonic's request bodies are streams, not
//!    `Clone`; kept for the retry ([`ReplayLayer::streaming`](crate::body::ReplayLayer::streaming)
//!    for client-streaming and bidirectional calls);
//! 4. palisade's preset (`palisade::preset::recommended`) with [`GrpcClassifier`] and a retry
//!    layer built with [`ReplayAttempts`](crate::body::ReplayAttempts); for server streams, the
//!    same layers by hand with [`StreamBreakerLayer`](crate::body::StreamBreakerLayer) in place
//!    of the breaker;
//! 5. [`PropagateDeadlineLayer`](crate::deadline::PropagateDeadlineLayer): each attempt tells
//!    the server the time left;
//! 6. a `map_request` from [`ReplayBody`](crate::body::ReplayBody) back to tonic's `Body`,
//!    then the `Channel`.
//!
//! **Restore failing statuses.** The classify layer turns a response with a failing
//! `grpc-status` into an error, a [`FailedResponse`](palisade_core::FailedResponse), so that
//! the retry and the breaker see the failure. tonic's client reads a status from a response,
//! but from an error only when it is a `tonic::Status`: any other error reaches the caller as
//! `UNKNOWN`. So a tonic client must put
//! `.map_result(|r| r.or_else(FailedResponse::<Response<Body>>::restore))` (or the same in
//! its own `map_result`, as below) above the stack: then an `INVALID_ARGUMENT`, or an
//! `UNAVAILABLE` once the retries give up, reaches the generated client with its code and
//! message, as the server sent them. Restore the response type the stack answers: with
//! [`StreamBreakerLayer`](crate::body::StreamBreakerLayer), `Response<JudgedBody<Body>>`.
//!
//! **palisade's own errors** are not statuses; tonic would make each of them `UNKNOWN`.
//! [`GrpcStatus::from_error`] gives the code and message palisade recommends for them (its
//! docs have the whole table): an open breaker's
//! [`CircuitOpen`](palisade_core::failure::CircuitOpen) and
//! [`NoHealthyEndpoint`](palisade_core::failure::NoHealthyEndpoint) are `UNAVAILABLE`
//! (gRPC's "try again later"), [`DeadlineExceeded`](palisade_core::failure::DeadlineExceeded)
//! and an attempt's [`Elapsed`](palisade_core::failure::Elapsed) `DEADLINE_EXCEEDED`, a
//! failure palisade classifies as rate limited `RESOURCE_EXHAUSTED`, each with its own
//! message (`circuit 'greeter' open, retry in 480 ms`). palisade does not depend on tonic:
//! build the status with `tonic::Status::new(tonic::Code::from(status.code.as_i32()),
//! status.message)`.
//!
//! **No context carrier is needed.** tonic's `Channel` is a `tower::buffer::Buffer`: its
//! requests are served on a task of its own, where palisade's context (the deadline, the
//! attempt) is not. Nothing can be put below that buffer, and nothing needs to be: with all
//! of palisade's layers above the `Channel`, as here, every one of them runs on the caller's
//! task, and `palisade::context::CarryLayer` and `ResumeLayer` are not needed.
//!
//! ```
//! use http::{Request, Response};
//! use palisade::classify::{BoxError, FailedResponse};
//! use palisade::retry::{LayerLimit, RetryLayer};
//! use palisade::{ServiceBuilderExt, preset};
//! use palisade_http::body::{ReplayAttempts, ReplayBody, ReplayLayer};
//! use palisade_http::deadline::{PropagateDeadlineLayer, ServerDeadlineLayer};
//! use palisade_http::grpc::{GrpcClassifier, GrpcStatus};
//! use tonic::body::Body;
//! use tonic::transport::Channel;
//! use tower::{Service, ServiceBuilder};
//!
//! /// A failing response back for tonic to read; any other error as the status palisade
//! /// recommends.
//! fn for_tonic(result: Result<Response<Body>, BoxError>) -> Result<Response<Body>, BoxError> {
//!     result
//!         .or_else(FailedResponse::<Response<Body>>::restore)
//!         .map_err(|e| {
//!             let status = GrpcStatus::from_error(&*e);
//!             let code = tonic::Code::from(status.code.as_i32());
//!             Box::new(tonic::Status::new(code, status.message)) as BoxError
//!         })
//! }
//!
//! /// The layers over a channel; the generated client takes the result:
//! /// `GreeterClient::new(protected(channel)?)`.
//! fn protected(
//!     channel: Channel,
//! ) -> Result<
//!     impl Service<Request<Body>, Response = Response<Body>, Error = BoxError, Future: Send> + Clone,
//!     BoxError,
//! > {
//!     let retry = RetryLayer::builder()
//!         .name("greeter")
//!         .max_attempts_with(ReplayAttempts::new(LayerLimit))
//!         .build()?;
//!     let preset = preset::recommended("greeter")
//!         .classifier(GrpcClassifier::new())
//!         .retry(retry)
//!         .build()?;
//!     Ok(ServiceBuilder::new()
//!         .map_result(for_tonic)
//!         .layer(ServerDeadlineLayer::new())
//!         .layer(ReplayLayer::new(64 * 1024))
//!         .palisade(preset)
//!         .layer(PropagateDeadlineLayer::new())
//!         .map_request(|req: Request<ReplayBody<Body>>| req.map(Body::new))
//!         .service(channel))
//! }
//! # let _ = protected;
//! ```
//!
//! `tests/grpc_unary.rs` runs this stack against a tonic server (a `set_timeout` that ends
//! the call, a failing status through a `StreamBreaker`, an open breaker's refusal), and
//! `cargo run -p palisade-http --example grpc_client` against a flaky one.
//!
//! # Idempotency
//!
//! A retryable code says the failure may pass, not that the call had no effect: a call that
//! timed out, or whose connection broke (`UNAVAILABLE`), may have been carried out. gRPC's
//! own retry design ([A6](https://github.com/grpc/proposal/blob/master/A6-client-retries.md))
//! leaves it to the service's configuration to say which methods may be retried. Every gRPC
//! call is an HTTP `POST`, so `Method::is_idempotent` cannot tell them apart: name the
//! methods that may be repeated by their path, and give the others one attempt, with
//! [`RetryBuilder::max_attempts_fn`](palisade_retry::RetryBuilder::max_attempts_fn):
//!
//! ```
//! use http::Request;
//! use palisade_retry::RetryLayer;
//!
//! # fn main() -> Result<(), palisade_core::ConfigError> {
//! const REPEATABLE: &[&str] = &["/helloworld.Greeter/SayHello", "/shop.Orders/Get"];
//! let retry = RetryLayer::builder()
//!     .max_attempts_fn(|req: &Request<()>| (!REPEATABLE.contains(&req.uri().path())).then_some(1))
//!     .build()?;
//! # let _ = retry;
//! # Ok(()) }
//! ```
//!
//! # gRPC servers
//!
//! On a tonic server, [`ErrorResponseLayer::grpc`](crate::respond::ErrorResponseLayer::grpc)
//! answers palisade's failures as the statuses [`GrpcStatus::from_error`] gives, in a
//! trailers-only response; the default `ErrorResponseLayer` answers HTTP statuses (a 504 for
//! a deadline), which a gRPC client reads as `UNAVAILABLE`.

use std::borrow::Cow;
use std::error::Error;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use http::header::InvalidHeaderValue;
use http::{HeaderMap, HeaderValue, Response, StatusCode};
use palisade_core::{BoxError, Category, Class, Classify, ConfigError, HasClass};

use crate::hint::ServerHints;
use crate::status::apply_hints;

/// `grpc-status`.
pub const GRPC_STATUS: &str = "grpc-status";
/// `grpc-message`.
pub const GRPC_MESSAGE: &str = "grpc-message";
/// `grpc-timeout`.
pub const GRPC_TIMEOUT: &str = "grpc-timeout";

/// A gRPC status code.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Code {
    /// 0: success.
    Ok,
    /// 1: the caller cancelled the call.
    Cancelled,
    /// 2: an error nothing more is known about.
    Unknown,
    /// 3: the request is invalid whatever the server's state.
    InvalidArgument,
    /// 4: the deadline passed before the call completed.
    DeadlineExceeded,
    /// 5: what was asked for does not exist.
    NotFound,
    /// 6: what the call would create already exists.
    AlreadyExists,
    /// 7: the caller may not do this.
    PermissionDenied,
    /// 8: a quota or a resource ran out (a rate limit, a full disk).
    ResourceExhausted,
    /// 9: the system is not in a state in which the call can run.
    FailedPrecondition,
    /// 10: the call was aborted, typically by a concurrency conflict.
    Aborted,
    /// 11: out of the valid range.
    OutOfRange,
    /// 12: the method is not implemented or not supported.
    Unimplemented,
    /// 13: an internal error of the server.
    Internal,
    /// 14: the service is unavailable right now (a transient condition).
    Unavailable,
    /// 15: unrecoverable data loss or corruption.
    DataLoss,
    /// 16: the caller's credentials are missing or invalid.
    Unauthenticated,
}

impl Code {
    const ALL: [Code; 17] = [
        Code::Ok,
        Code::Cancelled,
        Code::Unknown,
        Code::InvalidArgument,
        Code::DeadlineExceeded,
        Code::NotFound,
        Code::AlreadyExists,
        Code::PermissionDenied,
        Code::ResourceExhausted,
        Code::FailedPrecondition,
        Code::Aborted,
        Code::OutOfRange,
        Code::Unimplemented,
        Code::Internal,
        Code::Unavailable,
        Code::DataLoss,
        Code::Unauthenticated,
    ];

    /// The code of a number; a number outside 0..=16 is [`Code::Unknown`], as gRPC treats it.
    pub fn from_i32(n: i32) -> Code {
        usize::try_from(n)
            .ok()
            .and_then(|i| Self::ALL.get(i).copied())
            .unwrap_or(Code::Unknown)
    }

    /// The code of a `grpc-status` value: one or more ASCII digits
    /// ([gRPC over HTTP/2](https://github.com/grpc/grpc/blob/master/doc/PROTOCOL-HTTP2.md):
    /// `Status → "grpc-status" 1*DIGIT`), around which whitespace is ignored; a number outside
    /// 0..=16 is [`Code::Unknown`]. `None` when the value is not that (empty, `abc`, `-1`,
    /// `+5`, `1 4`).
    ///
    /// `None` means "not a status", not "no status": a response or trailers whose
    /// `grpc-status` is malformed failed, and [`GrpcStatus::from_headers`] and
    /// [`GrpcClassifier`] read it as [`Code::Unknown`].
    pub fn from_header(value: &str) -> Option<Code> {
        Code::from_bytes(value.as_bytes())
    }

    /// [`Code::from_header`] on a header's bytes, which need not be UTF-8.
    fn from_bytes(value: &[u8]) -> Option<Code> {
        let digits = value.trim_ascii();
        if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
            return None;
        }
        // Digits only: a number too large for an `i32` is outside 0..=16 all the same.
        Some(
            std::str::from_utf8(digits)
                .ok()
                .and_then(|n| n.parse::<i32>().ok())
                .map_or(Code::Unknown, Code::from_i32),
        )
    }

    /// The code of `headers`' (or trailers') `grpc-status`; `None` when they carry none.
    ///
    /// A `grpc-status` that is present but malformed (not digits, not UTF-8) is
    /// [`Code::Unknown`]: the status of the call is not known, so it did not succeed. tonic
    /// does the same (`Status::from_header_map` reads such a value as `Code::Unknown`), as
    /// does grpc-java; grpc-go fails the call with `INTERNAL`, of the same class here.
    fn from_header_map(headers: &HeaderMap) -> Option<Code> {
        let value = headers.get(GRPC_STATUS)?;
        Some(Code::from_bytes(value.as_bytes()).unwrap_or(Code::Unknown))
    }

    /// The number.
    pub fn as_i32(self) -> i32 {
        self as i32
    }

    /// The canonical name: `UNAVAILABLE`.
    pub fn as_str(self) -> &'static str {
        match self {
            Code::Ok => "OK",
            Code::Cancelled => "CANCELLED",
            Code::Unknown => "UNKNOWN",
            Code::InvalidArgument => "INVALID_ARGUMENT",
            Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
            Code::NotFound => "NOT_FOUND",
            Code::AlreadyExists => "ALREADY_EXISTS",
            Code::PermissionDenied => "PERMISSION_DENIED",
            Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
            Code::FailedPrecondition => "FAILED_PRECONDITION",
            Code::Aborted => "ABORTED",
            Code::OutOfRange => "OUT_OF_RANGE",
            Code::Unimplemented => "UNIMPLEMENTED",
            Code::Internal => "INTERNAL",
            Code::Unavailable => "UNAVAILABLE",
            Code::DataLoss => "DATA_LOSS",
            Code::Unauthenticated => "UNAUTHENTICATED",
        }
    }

    /// The code gRPC gives a response whose HTTP status is not 200 and that carries no
    /// `grpc-status` (a proxy's error page, say), as gRPC's
    /// [HTTP to gRPC status mapping](https://github.com/grpc/grpc/blob/master/doc/http-grpc-status-mapping.md)
    /// says; `None` for 200.
    pub fn from_http(status: StatusCode) -> Option<Code> {
        Some(match status.as_u16() {
            200 => return None,
            400 => Code::Internal,
            401 => Code::Unauthenticated,
            403 => Code::PermissionDenied,
            404 => Code::Unimplemented,
            429 | 502..=504 => Code::Unavailable,
            _ => Code::Unknown,
        })
    }

    /// The class of a failing code ([`GrpcClassifier`]'s table); `None` for [`Code::Ok`].
    pub fn class(self) -> Option<Class> {
        let category = match self {
            Code::Ok => return None,
            Code::Cancelled => Category::Cancelled,
            Code::Unknown | Code::Internal => Category::ServerError,
            Code::InvalidArgument
            | Code::AlreadyExists
            | Code::FailedPrecondition
            | Code::OutOfRange => Category::Validation,
            Code::DeadlineExceeded => Category::Timeout,
            Code::NotFound => Category::NotFound,
            Code::PermissionDenied | Code::Unauthenticated => Category::Authentication,
            Code::ResourceExhausted => Category::RateLimited,
            Code::Aborted => Category::Transient,
            Code::Unimplemented | Code::DataLoss => {
                return Some(Class::new(Category::ServerError).with_retryable(false));
            }
            Code::Unavailable => Category::Network,
        };
        Some(Class::new(category))
    }
}

impl fmt::Display for Code {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A failing gRPC status, as read from headers or trailers.
///
/// Its class ([`HasClass`]) is its code's in [`GrpcClassifier`]'s table (a classifier's
/// overrides and the server's hints are not applied). Returned as an error,
/// [`class_of`](palisade_core::class_of) reads that class under any classifier:
/// [`from_headers`](Self::from_headers) (and so the guard, which reads trailers with it)
/// [registers](palisade_core::register) the type when it reads a failing code. A status built
/// by hand is known once the type is registered: call `palisade_core::register::<GrpcStatus>()`
/// at start-up if your code builds them without reading one first.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GrpcStatus {
    /// The code.
    pub code: Code,
    /// `grpc-message`, percent-decoded; empty when absent.
    pub message: String,
}

impl GrpcStatus {
    /// The status in `headers` (or trailers), if they carry a `grpc-status`; `None` when they
    /// do not. A `grpc-status` that is present but malformed (`abc`, empty, `-1`, not UTF-8) is
    /// [`Code::Unknown`], as tonic's `Status::from_header_map` reads it: a call whose status
    /// cannot be read did not succeed. Reading a failing code registers the type with
    /// palisade's classifier (see above); `OK` does no more than read.
    pub fn from_headers(headers: &HeaderMap) -> Option<GrpcStatus> {
        let code = Code::from_header_map(headers)?;
        if code != Code::Ok {
            // A failing status is an error that callers box (the guard does): register it so
            // that `class_of` reads its class, as the default rules do not know this crate's
            // types. Not for `OK`, the trailers of every successful call; and once per
            // process (an atomic load after that, no lock), as a classifier may count a
            // failing code as a success and read it on every call.
            static REGISTERED: std::sync::Once = std::sync::Once::new();
            REGISTERED.call_once(palisade_core::register::<GrpcStatus>);
        }
        let message = headers
            .get(GRPC_MESSAGE)
            .map(|v| percent_decode(v.as_bytes()))
            .unwrap_or_default();
        Some(GrpcStatus { code, message })
    }
}

impl fmt::Display for GrpcStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.message.is_empty() {
            write!(f, "gRPC {}", self.code)
        } else {
            write!(f, "gRPC {}: {}", self.code, self.message)
        }
    }
}

impl Error for GrpcStatus {}

impl HasClass for GrpcStatus {
    fn class(&self) -> Class {
        self.code.class().unwrap_or(Class::new(Category::Ignored))
    }
}

impl GrpcStatus {
    /// The status palisade recommends for a call that ended with `err`: what a tonic client
    /// (or a gRPC server) should answer in its place, so that the caller reads a code that
    /// says what happened. Build tonic's status from it with
    /// `tonic::Status::new(tonic::Code::from(status.code.as_i32()), status.message)`: palisade
    /// does not depend on tonic.
    ///
    /// The first of these that applies, looking at `err` and then along its chain (its
    /// [`source`](Error::source)s; the error inside a
    /// [`Classified`](palisade_core::Classified) or an `io::Error`):
    ///
    /// | the error | code | message |
    /// |---|---|---|
    /// | a [`GrpcStatus`] (a failing status in the trailers, from [`GuardLayer::grpc_trailers`](crate::body::GuardLayer::grpc_trailers)) | kept (`OK`, which is no error, is `UNKNOWN`) | kept |
    /// | [`CircuitOpen`] (an open breaker's refusal), [`NoHealthyEndpoint`], [`FeatureOff`] | `UNAVAILABLE` (14) | `err`'s: `circuit 'greeter' open, retry in 480 ms` |
    /// | [`DeadlineExceeded`] (palisade-timeout's `Deadline`, [`ServerDeadline`](crate::deadline::ServerDeadline)), [`Elapsed`] (an attempt's timeout) | `DEADLINE_EXCEEDED` (4) | `err`'s |
    ///
    /// and otherwise by `err`'s class ([`class_of_dyn`](palisade_core::class_of_dyn): the
    /// class a classify layer gave it, or palisade's default rules), with `err`'s message:
    ///
    /// | category | code |
    /// |---|---|
    /// | `Rejected` (a protecting layer refused to send the call) | `UNAVAILABLE` (14) |
    /// | `Timeout` | `DEADLINE_EXCEEDED` (4) |
    /// | `RateLimited`, `ResourceExhausted` | `RESOURCE_EXHAUSTED` (8) |
    /// | `Cancelled` | `CANCELLED` (1) |
    /// | `Validation` | `INVALID_ARGUMENT` (3) |
    /// | `Authentication` | `UNAUTHENTICATED` (16); `PERMISSION_DENIED` (7) when the error is an `io::Error` of kind `PermissionDenied` |
    /// | `NotFound` | `NOT_FOUND` (5) |
    /// | any other (`Network`, `Transient`, `ServerError`, `Unknown`, `Ignored`), retryable | `UNAVAILABLE` (14): gRPC's code for "try again" |
    /// | any other, not retryable | `UNKNOWN` (2): a caller must not retry it |
    ///
    /// A failing response that [`FailedResponse::restore`](palisade_core::FailedResponse::restore)
    /// turned back into the response is not an error any more: tonic reads its own
    /// `grpc-status` and `grpc-message` from it, exactly as the server sent them
    /// (`INVALID_ARGUMENT: bad name`). Restore first, then map what is left: one that was not
    /// restored (a body type the restore did not name) comes here and gets its class's code
    /// (`INVALID_ARGUMENT` for a `FAILED_PRECONDITION`, whose class is `Validation`).
    ///
    /// Reads the error's message: this allocates, on the failure path only.
    ///
    /// [`CircuitOpen`]: palisade_core::failure::CircuitOpen
    /// [`NoHealthyEndpoint`]: palisade_core::failure::NoHealthyEndpoint
    /// [`FeatureOff`]: palisade_core::failure::FeatureOff
    /// [`DeadlineExceeded`]: palisade_core::failure::DeadlineExceeded
    /// [`Elapsed`]: palisade_core::failure::Elapsed
    ///
    /// ```
    /// use palisade_core::BoxError;
    /// use palisade_core::failure::{CircuitOpen, DeadlineExceeded};
    /// use palisade_http::grpc::{Code, GrpcStatus};
    /// use std::time::Duration;
    ///
    /// let open: BoxError = Box::new(CircuitOpen::new(
    ///     "greeter".into(),
    ///     palisade_breaker::State::Open,
    ///     Some(Duration::from_millis(480)),
    /// ));
    /// let status = GrpcStatus::from_error(&*open);
    /// assert_eq!((status.code, status.code.as_i32(), status.code.as_str()), (Code::Unavailable, 14, "UNAVAILABLE"));
    /// assert_eq!(status.message, "circuit 'greeter' open, retry in 480 ms");
    ///
    /// let late = DeadlineExceeded::with_limit(Duration::from_millis(200));
    /// assert_eq!(GrpcStatus::from_error(&late).code, Code::DeadlineExceeded);
    /// // In a tonic client: tonic::Status::new(tonic::Code::from(status.code.as_i32()), status.message)
    /// ```
    pub fn from_error(err: &(dyn Error + 'static)) -> GrpcStatus {
        use palisade_core::failure::{
            CircuitOpen, DeadlineExceeded, Elapsed, FeatureOff, NoHealthyEndpoint,
        };
        let message = || err.to_string();
        for e in palisade_core::error::chain(err) {
            if let Some(status) = e.downcast_ref::<GrpcStatus>() {
                let code = match status.code {
                    Code::Ok => Code::Unknown,
                    code => code,
                };
                return GrpcStatus {
                    code,
                    message: status.message.clone(),
                };
            }
            let code =
                if e.is::<CircuitOpen>() || e.is::<NoHealthyEndpoint>() || e.is::<FeatureOff>() {
                    Code::Unavailable
                } else if e.is::<DeadlineExceeded>() || e.is::<Elapsed>() {
                    Code::DeadlineExceeded
                } else {
                    continue;
                };
            return GrpcStatus {
                code,
                message: message(),
            };
        }
        let class = palisade_core::class_of_dyn(err);
        let code = match class.category {
            Category::Rejected => Code::Unavailable,
            Category::Timeout => Code::DeadlineExceeded,
            Category::RateLimited | Category::ResourceExhausted => Code::ResourceExhausted,
            Category::Cancelled => Code::Cancelled,
            Category::Validation => Code::InvalidArgument,
            Category::Authentication if permission_denied(err) => Code::PermissionDenied,
            Category::Authentication => Code::Unauthenticated,
            Category::NotFound => Code::NotFound,
            _ if class.retryable => Code::Unavailable,
            _ => Code::Unknown,
        };
        GrpcStatus {
            code,
            message: message(),
        }
    }
}

/// Whether `err`'s chain has an `io::Error` of kind `PermissionDenied`.
fn permission_denied(err: &(dyn Error + 'static)) -> bool {
    palisade_core::error::chain(err).any(|e| {
        e.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::PermissionDenied)
    })
}

/// `grpc-message` is percent-encoded; a malformed escape is kept as it is.
fn percent_decode(bytes: &[u8]) -> String {
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && i + 2 < bytes.len()
            && let (Some(h), Some(l)) = (hex(bytes[i + 1]), hex(bytes[i + 2]))
        {
            out.push(h * 16 + l);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// Classifies gRPC responses by `grpc-status`, and client errors by kind.
///
/// | code | class |
/// |---|---|
/// | `OK` | success |
/// | `CANCELLED` | `Cancelled`, not retryable |
/// | `UNKNOWN`, `INTERNAL` | `ServerError`, retryable |
/// | `INVALID_ARGUMENT`, `ALREADY_EXISTS`, `FAILED_PRECONDITION`, `OUT_OF_RANGE` | `Validation`, not retryable |
/// | `DEADLINE_EXCEEDED` | `Timeout`, retryable |
/// | `NOT_FOUND` | `NotFound`, not retryable |
/// | `PERMISSION_DENIED`, `UNAUTHENTICATED` | `Authentication`, not retryable |
/// | `RESOURCE_EXHAUSTED` | `RateLimited`, retryable, with the server's pushback as its wait; `Validation`, not retryable, when its `grpc-message` says the message was larger than the maximum (`received message larger than max`, `message length too large`) |
/// | `ABORTED` | `Transient`, retryable |
/// | `UNIMPLEMENTED`, `DATA_LOSS` | `ServerError`, not retryable |
/// | `UNAVAILABLE` | `Network`, retryable (transient, as gRPC's status codes say; like every retryable code here, it does not say the call had no effect: see [Idempotency](crate::grpc#idempotency)) |
///
/// A response with `grpc-status` in its headers (trailers-only) is classified by it; one
/// without, by its HTTP status ([`Code::from_http`]: a 503 from a proxy is `UNAVAILABLE`),
/// except a 429, which is `RateLimited` (retryable, not counted against the dependency's
/// health, as for HTTP) where gRPC's mapping says `UNAVAILABLE`; a
/// 200 without is a success as far as its head goes, its status coming in the trailers (see
/// [`GuardLayer::grpc_trailers`](crate::body::GuardLayer::grpc_trailers)). A `grpc-status`
/// that is present but malformed (`abc`, empty, `-1`, not UTF-8), in the headers or in the
/// trailers, is `UNKNOWN`, as gRPC clients read it (tonic's `Status::from_header_map`): a
/// status the client cannot read is not a success.
/// `grpc-retry-pushback-ms` sets the wait of any failing code, and a negative or malformed one
/// makes it not retryable ([gRPC A6](https://github.com/grpc/proposal/blob/master/A6-client-retries.md));
/// the other [server hints](crate::hint) apply as for HTTP. Errors are classified like
/// [`HttpClassifier`](crate::HttpClassifier)'s.
///
/// ```
/// use http::Response;
/// use palisade_core::{BoxError, Category, Classify};
/// use palisade_http::grpc::GrpcClassifier;
/// use std::time::Duration;
///
/// let exhausted = Response::builder()
///     .header("grpc-status", "8")
///     .header("grpc-message", "quota%20exceeded")
///     .header("grpc-retry-pushback-ms", "250")
///     .body(())
///     .unwrap();
/// let classifier = GrpcClassifier::new();
/// let class = classifier.classify(&Ok::<_, BoxError>(exhausted)).unwrap();
/// assert_eq!(class.category, Category::RateLimited);
/// assert_eq!(class.retry_after, Some(Duration::from_millis(250)));
/// ```
#[derive(Clone, Debug, Default)]
pub struct GrpcClassifier {
    overrides: Option<Arc<[(Code, Option<Class>)]>>,
}

impl GrpcClassifier {
    /// The table above.
    pub fn new() -> Self {
        Self::default()
    }

    /// A builder for overrides.
    pub fn builder() -> GrpcClassifierBuilder {
        GrpcClassifierBuilder {
            overrides: Vec::new(),
        }
    }

    /// The class of a code, overrides included; `None` for a success.
    pub fn classify_code(&self, code: Code) -> Option<Class> {
        if let Some(overrides) = &self.overrides
            && let Some((_, class)) = overrides.iter().find(|(c, _)| *c == code)
        {
            return *class;
        }
        code.class()
    }

    /// The class of `code` in `headers`: [`classify_code`](Self::classify_code)'s, except a
    /// `RESOURCE_EXHAUSTED` whose `grpc-message` says the message was larger than the peer's
    /// maximum (grpc-go's `grpc: received message larger than max`, tonic's `message length
    /// too large`), which is `Validation`, not retryable: the same request fails again, however
    /// long it waits. A code given a class of its own ([`GrpcClassifierBuilder::code`]) keeps
    /// it.
    fn classify_code_in(&self, code: Code, headers: &HeaderMap) -> Option<Class> {
        let overridden = self
            .overrides
            .as_ref()
            .is_some_and(|o| o.iter().any(|(c, _)| *c == code));
        if code == Code::ResourceExhausted && !overridden && too_large(headers) {
            return Some(Class::new(Category::Validation));
        }
        self.classify_code(code)
    }

    /// The class of a call whose final status never came (a body that ended without a
    /// `grpc-status`): `UNKNOWN`'s, as tonic and grpc-go read it.
    pub(crate) fn missing_status(&self) -> Class {
        self.classify_code(Code::Unknown)
            .unwrap_or_else(|| Class::new(Category::ServerError))
    }

    /// The class of headers or trailers that carry a failing `grpc-status`, refined by their
    /// hints, and the status.
    pub fn classify_trailers(&self, headers: &HeaderMap) -> Option<(Class, GrpcStatus)> {
        let status = GrpcStatus::from_headers(headers)?;
        let class = self.classify_code_in(status.code, headers)?;
        let hints = ServerHints::from_headers_wall_clock(headers);
        Some((apply_hints(class, &hints), status))
    }

    /// The class of a response's head; `None` for a success (or a status still to come in the
    /// trailers).
    pub fn classify_response<B>(&self, response: &Response<B>) -> Option<Class> {
        let headers = response.headers();
        let code = match Code::from_header_map(headers) {
            Some(code) => code,
            // A 429 without `grpc-status` (a proxy or gateway pacing its callers): gRPC's
            // mapping makes it UNAVAILABLE, but it is a rate limit, which does not count
            // against the dependency's health (as HTTP's classifier and tonic's own message,
            // "mapped from HTTP status code 429", read it).
            None if response.status() == StatusCode::TOO_MANY_REQUESTS => {
                let hints = ServerHints::from_headers_wall_clock(headers);
                return Some(apply_hints(Class::new(Category::RateLimited), &hints));
            }
            None => Code::from_http(response.status())?,
        };
        let class = self.classify_code_in(code, headers)?;
        let hints = ServerHints::from_headers_wall_clock(headers);
        Some(apply_hints(class, &hints))
    }
}

/// Whether the head of `response` leaves its body no final status to carry: the status is in
/// the head (trailers-only), or the HTTP status failed (classified by the head).
pub(crate) fn status_in_head<B>(response: &Response<B>) -> bool {
    response.status() != StatusCode::OK || response.headers().contains_key(GRPC_STATUS)
}

/// Whether `headers`' `grpc-message` says a message was larger than the peer accepts.
fn too_large(headers: &HeaderMap) -> bool {
    GrpcStatus::from_headers(headers).is_some_and(|status| {
        let message = status.message.to_ascii_lowercase();
        message.contains("larger than max") || message.contains("message length too large")
    })
}

impl<B> Classify<Response<B>, BoxError> for GrpcClassifier {
    fn classify(&self, result: &Result<Response<B>, BoxError>) -> Option<Class> {
        match result {
            Ok(response) => self.classify_response(response),
            Err(err) => Some(crate::transport::classify_error(&**err)),
        }
    }

    fn describe(&self, response: &Response<B>) -> Option<Cow<'static, str>> {
        match GrpcStatus::from_headers(response.headers()) {
            Some(status) => Some(Cow::Owned(status.to_string())),
            None => Some(Cow::Owned(format!(
                "gRPC {} ({})",
                Code::from_http(response.status()).unwrap_or(Code::Ok),
                crate::status::describe_status(response.status())
            ))),
        }
    }
}

/// Builds a [`GrpcClassifier`].
#[derive(Clone, Debug)]
pub struct GrpcClassifierBuilder {
    overrides: Vec<(Code, Option<Class>)>,
}

impl GrpcClassifierBuilder {
    /// `code` gets `class` in place of the table's.
    pub fn code(mut self, code: Code, class: Class) -> Self {
        self.overrides.push((code, Some(class)));
        self
    }

    /// `code` is a success (a `NOT_FOUND` that answers a lookup).
    pub fn success(mut self, code: Code) -> Self {
        self.overrides.push((code, None));
        self
    }

    /// Builds the classifier.
    ///
    /// # Errors
    /// A [`ConfigError`] naming `code[i]` when a code is given twice.
    pub fn build(self) -> Result<GrpcClassifier, ConfigError> {
        for (i, (code, _)) in self.overrides.iter().enumerate() {
            if self.overrides[..i].iter().any(|(c, _)| c == code) {
                return Err(ConfigError::new(
                    format!("code[{i}]"),
                    format!("gives {code} a second time"),
                ));
            }
        }
        Ok(GrpcClassifier {
            overrides: (!self.overrides.is_empty()).then(|| self.overrides.into()),
        })
    }
}

/// The largest value `grpc-timeout` carries: eight digits.
const MAX_TIMEOUT_VALUE: u128 = 99_999_999;

/// Formats a duration as a `grpc-timeout` value: at most eight digits and a unit (`H`, `M`,
/// `S`, `m`, `u`, `n`), in the coarsest unit that states it exactly (`250m`, `30S`), else the
/// finest unit it fits in, rounded up (`1000001u`); zero is `0n`.
///
/// ```
/// use palisade_http::grpc::{format_timeout, parse_timeout};
/// use std::time::Duration;
///
/// assert_eq!(format_timeout(Duration::from_millis(250)), "250m");
/// assert_eq!(format_timeout(Duration::from_secs(30)), "30S");
/// assert_eq!(parse_timeout("250m"), Some(Duration::from_millis(250)));
/// assert_eq!(parse_timeout("123456789S"), None); // nine digits
/// ```
pub fn format_timeout(d: Duration) -> String {
    let (value, unit) = timeout_parts(d);
    format!("{value}{unit}")
}

/// [`format_timeout`]'s text as a header value, formatted on the stack: the value's own bytes
/// are the one allocation.
pub(crate) fn timeout_header(d: Duration) -> Result<HeaderValue, InvalidHeaderValue> {
    use std::io::Write;
    let (value, unit) = timeout_parts(d);
    // At most eight digits and a one-byte unit.
    let mut buf = [0u8; 9];
    let free = {
        let mut rest = &mut buf[..];
        // Cannot fail: the text fits.
        let _ = write!(rest, "{value}{unit}");
        rest.len()
    };
    HeaderValue::from_bytes(&buf[..buf.len() - free])
}

/// The number and unit of [`format_timeout`]'s text.
fn timeout_parts(d: Duration) -> (u128, char) {
    const UNITS: [(u128, char); 6] = [
        (3_600_000_000_000, 'H'),
        (60_000_000_000, 'M'),
        (1_000_000_000, 'S'),
        (1_000_000, 'm'),
        (1_000, 'u'),
        (1, 'n'),
    ];
    let nanos = d.as_nanos();
    if nanos == 0 {
        return (0, 'n');
    }
    if let Some((unit, c)) = UNITS
        .iter()
        .find(|(unit, _)| nanos.is_multiple_of(*unit) && nanos / unit <= MAX_TIMEOUT_VALUE)
    {
        return (nanos / unit, *c);
    }
    for (unit, c) in UNITS.iter().rev() {
        let value = nanos.div_ceil(*unit);
        if value <= MAX_TIMEOUT_VALUE {
            return (value, *c);
        }
    }
    (MAX_TIMEOUT_VALUE, 'H')
}

/// Parses a `grpc-timeout` value (one to eight digits and a unit); `None` when malformed.
pub fn parse_timeout(value: &str) -> Option<Duration> {
    let v = value.trim();
    let unit = v.chars().last()?;
    let digits = &v[..v.len() - unit.len_utf8()];
    if digits.is_empty() || digits.len() > 8 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let n: u64 = digits.parse().ok()?;
    Some(match unit {
        'H' => Duration::from_secs(n * 3600),
        'M' => Duration::from_secs(n * 60),
        'S' => Duration::from_secs(n),
        'm' => Duration::from_millis(n),
        'u' => Duration::from_micros(n),
        'n' => Duration::from_nanos(n),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn grpc(headers: &[(&str, &str)]) -> Result<Response<()>, BoxError> {
        let mut b = Response::builder();
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        Ok(b.body(()).unwrap())
    }

    #[test]
    fn the_code_table() {
        use Category::*;
        let c = GrpcClassifier::new();
        assert_eq!(c.classify(&grpc(&[("grpc-status", "0")])), None);
        for (code, category, retryable) in [
            (1, Cancelled, false),
            (2, ServerError, true),
            (3, Validation, false),
            (4, Timeout, true),
            (5, NotFound, false),
            (6, Validation, false),
            (7, Authentication, false),
            (8, RateLimited, true),
            (9, Validation, false),
            (10, Transient, true),
            (11, Validation, false),
            (12, ServerError, false),
            (13, ServerError, true),
            (14, Network, true),
            (15, ServerError, false),
            (16, Authentication, false),
            (99, ServerError, true),
        ] {
            let class = c
                .classify(&grpc(&[("grpc-status", &code.to_string())]))
                .unwrap();
            assert_eq!(
                (class.category, class.retryable),
                (category, retryable),
                "{code}"
            );
        }
        // Not a number: a status the client cannot read, UNKNOWN (as tonic reads it).
        let unknown = c.classify(&grpc(&[("grpc-status", "x")])).unwrap();
        assert_eq!((unknown.category, unknown.retryable), (ServerError, true));
    }

    /// A `grpc-status` that is there but malformed, as remote input may be.
    fn malformed() -> Vec<HeaderValue> {
        let mut values: Vec<HeaderValue> = [
            "abc", "", " ", "1 4", "-1", "-0", "+0", "+5", "0x0", "0.0", "1e1", "٣", "OK",
        ]
        .into_iter()
        .map(|v| HeaderValue::from_str(v).unwrap())
        .collect();
        // Not UTF-8 (obs-text).
        values.push(HeaderValue::from_bytes(b"\xff").unwrap());
        values.push(HeaderValue::from_bytes(b"1\xe9").unwrap());
        values
    }

    #[test]
    fn a_malformed_grpc_status_is_unknown_not_a_success() {
        let c = GrpcClassifier::new();
        let unknown = Code::Unknown.class();
        for value in malformed() {
            let mut h = HeaderMap::new();
            h.insert(GRPC_STATUS, value.clone());
            // In the headers (trailers-only): a failure, UNKNOWN, whatever the HTTP status.
            for status in [200, 503] {
                let mut r = Response::new(());
                *r.status_mut() = StatusCode::from_u16(status).unwrap();
                *r.headers_mut() = h.clone();
                assert_eq!(c.classify_response(&r), unknown, "{value:?} {status}");
                assert_eq!(
                    Classify::<Response<()>, BoxError>::describe(&c, &r).as_deref(),
                    Some("gRPC UNKNOWN"),
                    "{value:?}"
                );
            }
            // Read as a status, and in the trailers.
            let status = GrpcStatus::from_headers(&h).unwrap();
            assert_eq!(status.code, Code::Unknown, "{value:?}");
            let (class, status) = c.classify_trailers(&h).unwrap();
            assert_eq!(Some(class), unknown, "{value:?}");
            assert_eq!(status.code, Code::Unknown, "{value:?}");
            // The strict parse says it is not a status.
            if let Ok(text) = value.to_str() {
                assert_eq!(Code::from_header(text), None, "{value:?}");
            }
        }
        // An override of UNKNOWN applies to it, as to any UNKNOWN.
        let lenient = GrpcClassifier::builder()
            .success(Code::Unknown)
            .build()
            .unwrap();
        assert_eq!(lenient.classify(&grpc(&[("grpc-status", "abc")])), None);
        // Absent: unchanged, the HTTP status decides and a 200 waits for its trailers.
        assert_eq!(c.classify(&grpc(&[])), None);
        assert_eq!(c.classify_trailers(&HeaderMap::new()), None);
        assert_eq!(GrpcStatus::from_headers(&HeaderMap::new()), None);
        // Well formed, with whitespace around, leading zeros, or too large: read as numbers.
        for (text, code) in [
            (" 0 ", Code::Ok),
            ("\t14", Code::Unavailable),
            ("014", Code::Unavailable),
            ("00", Code::Ok),
            ("17", Code::Unknown),
            ("99999999999999999999", Code::Unknown),
        ] {
            assert_eq!(Code::from_header(text), Some(code), "{text:?}");
            let mut h = HeaderMap::new();
            h.insert(GRPC_STATUS, HeaderValue::from_str(text).unwrap());
            assert_eq!(GrpcStatus::from_headers(&h).unwrap().code, code, "{text:?}");
        }
    }

    #[test]
    fn http_statuses_without_grpc_status() {
        let c = GrpcClassifier::new();
        let r = Ok::<_, BoxError>(Response::builder().status(503).body(()).unwrap());
        assert_eq!(c.classify(&r).unwrap().category, Category::Network);
        assert_eq!(
            Classify::<Response<()>, BoxError>::describe(&c, r.as_ref().unwrap()).as_deref(),
            Some("gRPC UNAVAILABLE (HTTP 503 Service Unavailable)")
        );
        let r = Ok::<_, BoxError>(Response::builder().status(404).body(()).unwrap());
        assert!(!c.classify(&r).unwrap().retryable); // UNIMPLEMENTED
        assert_eq!(c.classify(&grpc(&[])), None);
        // A proxy's 429: a rate limit, retryable, not counted against health, with its hint.
        let r = Ok::<_, BoxError>(
            Response::builder()
                .status(429)
                .header("retry-after", "2")
                .body(())
                .unwrap(),
        );
        let class = c.classify(&r).unwrap();
        assert_eq!(class.category, Category::RateLimited);
        assert!(class.retryable);
        assert!(!class.counts_against_health());
        assert_eq!(class.retry_after, Some(Duration::from_secs(2)));
        // With a grpc-status of its own, the status decides.
        let r = grpc(&[("grpc-status", "14")]);
        assert_eq!(c.classify(&r).unwrap().category, Category::Network);
    }

    /// A message larger than the peer's maximum fails the same way however often it is sent.
    #[test]
    fn a_message_too_large_is_not_retried() {
        let c = GrpcClassifier::new();
        let too_large = "grpc: received message larger than max (5000000 vs. 4194304)";
        let r = grpc(&[("grpc-status", "8"), ("grpc-message", too_large)]);
        let class = c.classify(&r).unwrap();
        assert_eq!(class.category, Category::Validation);
        assert!(!class.retryable);
        let mut trailers = HeaderMap::new();
        trailers.insert("grpc-status", "8".parse().unwrap());
        trailers.insert("grpc-message", "Message Length Too Large".parse().unwrap());
        assert!(!c.classify_trailers(&trailers).unwrap().0.retryable);
        // Any other RESOURCE_EXHAUSTED is a rate limit; an override keeps its class.
        let r = grpc(&[("grpc-status", "8"), ("grpc-message", "quota")]);
        assert_eq!(c.classify(&r).unwrap().category, Category::RateLimited);
        let mine = GrpcClassifier::builder()
            .code(
                Code::ResourceExhausted,
                Class::new(Category::ResourceExhausted),
            )
            .build()
            .unwrap();
        let r = grpc(&[("grpc-status", "8"), ("grpc-message", too_large)]);
        assert_eq!(
            mine.classify(&r).unwrap().category,
            Category::ResourceExhausted
        );
    }

    #[test]
    fn pushback_and_messages() {
        let c = GrpcClassifier::new();
        let r = grpc(&[("grpc-status", "8"), ("grpc-retry-pushback-ms", "-1")]);
        assert!(!c.classify(&r).unwrap().retryable);
        let r = grpc(&[("grpc-status", "14"), ("grpc-retry-pushback-ms", "40")]);
        assert_eq!(
            c.classify(&r).unwrap().retry_after,
            Some(Duration::from_millis(40))
        );
        let r = grpc(&[("grpc-status", "14"), ("grpc-message", "backend%20down%2")]);
        assert_eq!(
            Classify::<Response<()>, BoxError>::describe(&c, r.as_ref().unwrap()).as_deref(),
            Some("gRPC UNAVAILABLE: backend down%2")
        );
    }

    /// A `grpc-retry-pushback-ms` that is there but malformed means "do not retry" (gRPC A6),
    /// whether it is text (`soon`) or bytes that are not visible ASCII; UNAVAILABLE included.
    #[test]
    fn a_malformed_pushback_is_not_retryable_whatever_its_bytes() {
        let c = GrpcClassifier::new();
        let with_pushback = |value: HeaderValue| {
            let mut h = HeaderMap::new();
            h.insert(GRPC_STATUS, HeaderValue::from_static("14"));
            h.insert("grpc-retry-pushback-ms", value);
            let mut r = Response::new(());
            *r.headers_mut() = h.clone();
            let class = c.classify(&Ok::<_, BoxError>(r)).unwrap();
            // The same in the trailers.
            assert_eq!(c.classify_trailers(&h).unwrap().0, class);
            class
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
    fn overrides() {
        let c = GrpcClassifier::builder()
            .success(Code::NotFound)
            .code(
                Code::Internal,
                Class::new(Category::ServerError).with_retryable(false),
            )
            .build()
            .unwrap();
        assert_eq!(c.classify(&grpc(&[("grpc-status", "5")])), None);
        assert!(
            !c.classify(&grpc(&[("grpc-status", "13")]))
                .unwrap()
                .retryable
        );
        let err = GrpcClassifier::builder()
            .success(Code::NotFound)
            .success(Code::NotFound)
            .build()
            .unwrap_err();
        assert_eq!(err.field(), "code[1]");
    }

    #[test]
    fn trailers() {
        let mut t = HeaderMap::new();
        t.insert("grpc-status", "14".parse().unwrap());
        let (class, status) = GrpcClassifier::new().classify_trailers(&t).unwrap();
        assert_eq!(class.category, Category::Network);
        assert_eq!(status.to_string(), "gRPC UNAVAILABLE");
        t.insert("grpc-status", "0".parse().unwrap());
        assert_eq!(GrpcClassifier::new().classify_trailers(&t), None);
    }

    #[test]
    fn timeouts() {
        for (d, s) in [
            (Duration::ZERO, "0n"),
            (Duration::from_millis(250), "250m"),
            (Duration::from_secs(30), "30S"),
            (Duration::from_secs(120), "2M"),
            (Duration::from_secs(7200), "2H"),
            (Duration::from_nanos(1), "1n"),
            (Duration::from_micros(1_500), "1500u"),
            (Duration::from_nanos(1_000_000_001), "1000001u"),
            (Duration::from_secs(100_000_000), "1666667M"),
            (Duration::from_secs(u64::MAX), "99999999H"),
        ] {
            assert_eq!(format_timeout(d), s, "{d:?}");
            assert_eq!(timeout_header(d).unwrap(), s, "{d:?}");
        }
        for bad in ["", "m", "10", "10x", "-1m", "123456789m", "1.5S", "１m"] {
            assert_eq!(parse_timeout(bad), None, "{bad:?}");
        }
        assert_eq!(
            parse_timeout("99999999H"),
            Some(Duration::from_secs(99_999_999 * 3600))
        );
    }

    #[test]
    fn codes_numbers_and_names() {
        let names = [
            "OK",
            "CANCELLED",
            "UNKNOWN",
            "INVALID_ARGUMENT",
            "DEADLINE_EXCEEDED",
            "NOT_FOUND",
            "ALREADY_EXISTS",
            "PERMISSION_DENIED",
            "RESOURCE_EXHAUSTED",
            "FAILED_PRECONDITION",
            "ABORTED",
            "OUT_OF_RANGE",
            "UNIMPLEMENTED",
            "INTERNAL",
            "UNAVAILABLE",
            "DATA_LOSS",
            "UNAUTHENTICATED",
        ];
        for (n, name) in names.iter().enumerate() {
            let code = Code::from_i32(n as i32);
            assert_eq!(code.as_i32(), n as i32);
            assert_eq!(code.as_str(), *name);
            assert_eq!(code.to_string(), *name);
            assert_eq!(Code::from_header(&format!(" {n} ")), Some(code));
        }
        for outside in [-1, 17, i32::MAX, i32::MIN] {
            assert_eq!(Code::from_i32(outside), Code::Unknown);
        }
        assert_eq!(Code::from_header("fourteen"), None);
    }

    #[test]
    fn http_to_grpc_codes() {
        for (status, code) in [
            (200, None),
            (400, Some(Code::Internal)),
            (401, Some(Code::Unauthenticated)),
            (403, Some(Code::PermissionDenied)),
            (404, Some(Code::Unimplemented)),
            (429, Some(Code::Unavailable)),
            (502, Some(Code::Unavailable)),
            (503, Some(Code::Unavailable)),
            (504, Some(Code::Unavailable)),
            (500, Some(Code::Unknown)),
            (505, Some(Code::Unknown)),
            (201, Some(Code::Unknown)),
        ] {
            let status = StatusCode::from_u16(status).unwrap();
            assert_eq!(Code::from_http(status), code, "{status}");
        }
    }

    #[test]
    fn statuses_from_headers_with_their_class() {
        let mut h = HeaderMap::new();
        assert_eq!(GrpcStatus::from_headers(&h), None);
        h.insert("grpc-status", "14".parse().unwrap());
        h.insert(
            "grpc-message",
            "%41%62c%2A%2a %zz%4 caf%C3%A9 %".parse().unwrap(),
        );
        let status = GrpcStatus::from_headers(&h).unwrap();
        assert_eq!(status.code, Code::Unavailable);
        assert_eq!(status.message, "Abc** %zz%4 café %");
        assert_eq!(status.to_string(), "gRPC UNAVAILABLE: Abc** %zz%4 café %");
        assert_eq!(status.class(), Class::new(Category::Network));
        let ok = GrpcStatus {
            code: Code::Ok,
            message: String::new(),
        };
        assert_eq!(ok.class().category, Category::Ignored);
        assert_eq!(ok.to_string(), "gRPC OK");
        for (text, want) in [
            ("%", "%"),
            ("%4", "%4"),
            ("%41", "A"),
            ("a%41", "aA"),
            ("%0A%0a", "\n\n"),
            ("%F0%9F%A6%80", "🦀"),
            ("%g0", "%g0"),
            ("%0g", "%0g"),
            ("%:0", "%:0"),
            ("%@0", "%@0"),
            ("%`0", "%`0"),
            ("%G0", "%G0"),
            ("%/0", "%/0"),
        ] {
            assert_eq!(percent_decode(text.as_bytes()), want, "{text:?}");
        }
    }

    /// A failing status read from headers, returned as an error (by a client that reads its
    /// trailers itself, or unwrapped from the guard's `Classified`), has its code's class under
    /// palisade's default rules, not `Unknown` (retryable): an `INVALID_ARGUMENT` or a
    /// `FAILED_PRECONDITION` is not retried. Only the read registers the type: nothing else in
    /// this test does.
    #[test]
    fn a_failing_status_is_its_codes_class_to_the_default_classifier() {
        for n in 1..=16 {
            let mut h = HeaderMap::new();
            h.insert(GRPC_STATUS, HeaderValue::from(n));
            let status = GrpcStatus::from_headers(&h).unwrap();
            let code = status.code;
            let err: BoxError = Box::new(status);
            assert_eq!(Some(palisade_core::class_of(&err)), code.class(), "{code}");
        }
    }

    /// Every row of `GrpcStatus::from_error`'s tables.
    #[test]
    fn the_status_palisade_recommends_for_each_error() {
        use palisade_core::failure::{
            BreakerState, CircuitOpen, DeadlineExceeded, Elapsed, FallbackFailed, FeatureOff,
            NoHealthyEndpoint,
        };
        use palisade_core::{Classified, FailedResponse};
        use std::io;
        let status = |err: BoxError| {
            let status = GrpcStatus::from_error(&*err);
            (status.code.as_i32(), status.code.as_str(), status.message)
        };
        let open = || {
            CircuitOpen::new(
                "greeter".into(),
                BreakerState::Open,
                Some(Duration::from_millis(480)),
            )
        };
        let ms = Duration::from_millis;
        // A status read from trailers: kept, also inside a `Classified` or an `io::Error`.
        let failing = GrpcStatus {
            code: Code::FailedPrecondition,
            message: "not yet".to_owned(),
        };
        for err in [
            Box::new(failing.clone()) as BoxError,
            Box::new(Classified::new(
                Class::new(Category::Network),
                failing.clone(),
            )),
            Box::new(io::Error::other(failing)),
        ] {
            assert_eq!(
                status(err),
                (9, "FAILED_PRECONDITION", "not yet".to_owned())
            );
        }
        let ok = GrpcStatus {
            code: Code::Ok,
            message: String::new(),
        };
        assert_eq!(status(Box::new(ok)).0, 2);
        // palisade's own failures, by type, with their messages.
        for (err, want) in [
            (
                Box::new(open()) as BoxError,
                (14, "circuit 'greeter' open, retry in 480 ms"),
            ),
            (
                Box::new(NoHealthyEndpoint { retry_after: None }),
                (14, "no healthy endpoint"),
            ),
            (
                Box::new(FeatureOff {
                    feature: "search".to_owned(),
                }),
                (14, "feature \"search\" is off"),
            ),
            (
                Box::new(DeadlineExceeded::with_limit(ms(200))),
                (4, "deadline of 200 ms exceeded"),
            ),
            (
                Box::new(Elapsed::with_limit(ms(250))),
                (4, "attempt timed out after 250 ms"),
            ),
            // Below another error: found in the chain, the outer message.
            (
                Box::new(FallbackFailed::new(Box::new(open()), Vec::new())),
                (
                    14,
                    "the call and 0 fallback(s) failed: circuit 'greeter' open, retry in 480 ms",
                ),
            ),
            (
                Box::new(Classified::new(Class::new(Category::Network), open())),
                (14, "circuit 'greeter' open, retry in 480 ms"),
            ),
        ] {
            let (code, _, message) = status(err);
            assert_eq!((code, message.as_str()), want);
        }
        // Each by its type, whatever class a layer above gave it.
        let judged = |err: BoxError| -> BoxError {
            Box::new(Classified::new(Class::new(Category::Validation), err))
        };
        for (err, code) in [
            (judged(Box::new(open())), 14),
            (
                judged(Box::new(NoHealthyEndpoint { retry_after: None })),
                14,
            ),
            (
                judged(Box::new(FeatureOff {
                    feature: "search".to_owned(),
                })),
                14,
            ),
            (judged(Box::new(DeadlineExceeded::with_limit(ms(200)))), 4),
            (judged(Box::new(Elapsed::with_limit(ms(250)))), 4),
        ] {
            assert_eq!(status(err).0, code);
        }
        // Any other error, by its class.
        let classified =
            |class: Class| -> BoxError { Box::new(Classified::new(class, "it failed")) };
        use Category::*;
        for (class, code, name) in [
            (Class::new(Rejected), 14, "UNAVAILABLE"),
            (
                Class::new(Rejected).with_retryable(false),
                14,
                "UNAVAILABLE",
            ),
            (Class::new(Timeout), 4, "DEADLINE_EXCEEDED"),
            (Class::new(RateLimited), 8, "RESOURCE_EXHAUSTED"),
            (Class::new(ResourceExhausted), 8, "RESOURCE_EXHAUSTED"),
            (Class::new(Cancelled), 1, "CANCELLED"),
            (Class::new(Validation), 3, "INVALID_ARGUMENT"),
            (Class::new(Authentication), 16, "UNAUTHENTICATED"),
            (Class::new(NotFound), 5, "NOT_FOUND"),
            (Class::new(Network), 14, "UNAVAILABLE"),
            (Class::new(Transient), 14, "UNAVAILABLE"),
            (Class::new(ServerError), 14, "UNAVAILABLE"),
            (Class::new(Unknown), 14, "UNAVAILABLE"),
            (Class::new(ServerError).with_retryable(false), 2, "UNKNOWN"),
            (Class::new(Network).with_retryable(false), 2, "UNKNOWN"),
            (Class::new(Ignored), 2, "UNKNOWN"),
        ] {
            assert_eq!(
                status(classified(class)),
                (code, name, "it failed".to_owned()),
                "{class:?}"
            );
        }
        // Refused permission: an io error says so.
        let denied: BoxError = Box::new(io::Error::from(io::ErrorKind::PermissionDenied));
        assert_eq!(status(denied).1, "PERMISSION_DENIED");
        let denied: BoxError = Box::new(Classified::new(
            Class::new(Authentication),
            io::Error::from(io::ErrorKind::PermissionDenied),
        ));
        assert_eq!(status(denied).1, "PERMISSION_DENIED");
        // Classified by the default rules: an io timeout.
        let timed_out: BoxError = Box::new(io::Error::from(io::ErrorKind::TimedOut));
        assert_eq!(status(timed_out).1, "DEADLINE_EXCEEDED");
        // A failed response that was not restored: its class, its message.
        let failed: BoxError = Box::new(
            FailedResponse::new(400u16, Class::new(Validation))
                .with_summary("HTTP 400 Bad Request"),
        );
        assert_eq!(
            status(failed),
            (
                3,
                "INVALID_ARGUMENT",
                "HTTP 400 Bad Request, classified as validation (low, not retryable)".to_owned()
            )
        );
    }

    #[test]
    fn timeouts_in_every_unit() {
        for (text, want) in [
            ("3H", Duration::from_secs(3 * 3600)),
            ("3M", Duration::from_secs(180)),
            ("3S", Duration::from_secs(3)),
            ("3m", Duration::from_millis(3)),
            ("3u", Duration::from_micros(3)),
            ("3n", Duration::from_nanos(3)),
            (" 12345678S ", Duration::from_secs(12_345_678)),
        ] {
            assert_eq!(parse_timeout(text), Some(want), "{text:?}");
        }
    }

    proptest! {
        #[test]
        fn timeouts_round_trip_never_shorter(nanos in 0u64..u64::MAX / 2) {
            let d = Duration::from_nanos(nanos);
            let text = format_timeout(d);
            prop_assert_eq!(timeout_header(d).unwrap(), text.as_str());
            let back = parse_timeout(&text).unwrap();
            prop_assert!(back >= d, "{text} {back:?} < {d:?}");
            // Rounded up by less than one unit of the finest unit that fits.
            prop_assert!(back - d < Duration::from_nanos(nanos / 99_999_999 + 1).max(Duration::from_nanos(1)) * 1000, "{text}");
        }

        #[test]
        fn grpc_parsers_never_panic(value in "\\PC{0,20}", bytes in proptest::collection::vec(any::<u8>(), 0..20)) {
            let _ = parse_timeout(&value);
            let _ = Code::from_header(&value);
            let _ = percent_decode(value.as_bytes());
            let _ = percent_decode(&bytes);
        }
    }
}
