//! Classes of transport errors: hyper's and hyper-util's client errors, by kind.
//!
//! | error | class |
//! |---|---|
//! | hyper-util: the connection could not be made (`is_connect`) | `Network`, retryable (the request was never sent); `Timeout` when the connect timed out |
//! | hyper-util: the request was refused before it was sent (unsupported method or version, a relative URI) | `Validation`, not retryable |
//! | hyper: a timeout (`is_timeout`) | `Timeout` |
//! | hyper: the connection closed before the message completed, the channel closed, the request was canceled because its connection went away, a shutdown error (`is_incomplete_message`, `is_closed`, `is_canceled`, `is_shutdown`) | `Network`, retryable |
//! | hyper: a message that is not valid HTTP (`is_parse`, or a body hyper could not decode: a malformed chunk) | `ServerError`, retryable: a protocol fault of the server or a proxy |
//! | hyper: the caller aborted the body (`is_body_write_aborted`) | `Cancelled` |
//! | hyper: a user error with a cause (a request body that failed) | the cause's class |
//! | a request body that could not be replayed ([`NotReplayable`]) | `Validation`, not retryable |
//!
//! Anything else (h2 stream errors, io errors in the chain) goes to the rules of palisade's
//! default classifier: io error kinds, then messages (`refused stream`, `connection reset`).
//!
//! These rules are type rules of a [`ClassifierBuilder`]; [`rules`] adds them to yours.

use std::error::Error;
use std::sync::LazyLock;

use palisade_core::{Category, Class, ClassifierBuilder, DefaultClassifier};

use crate::body::NotReplayable;

static DEFAULT: LazyLock<DefaultClassifier> = LazyLock::new(|| {
    rules(DefaultClassifier::builder())
        .build()
        .expect("the transport rules add no patterns")
});

/// palisade's default classifier with the transport rules of this module before its own.
///
/// Cheap: built once, shared by every clone.
pub fn classifier() -> DefaultClassifier {
    DEFAULT.clone()
}

/// Adds the transport rules of this module to `builder`, before the rules added after this
/// call.
///
/// ```
/// use palisade_core::{Category, Class, DefaultClassifier};
///
/// let classifier = palisade_http::transport::rules(DefaultClassifier::builder())
///     .message("model is loading", Class::new(Category::Transient))
///     .build()?;
/// # let _ = classifier;
/// # Ok::<(), palisade_core::ConfigError>(())
/// ```
pub fn rules(builder: ClassifierBuilder) -> ClassifierBuilder {
    let builder = builder
        .error_fn(|_: &NotReplayable| Some(Class::new(Category::Validation).with_retryable(false)));
    #[cfg(feature = "hyper")]
    let builder = builder
        .error_fn(|e: &hyper_util::client::legacy::Error| legacy_class(e))
        .error_fn(|e: &hyper::Error| hyper_class(e));
    builder
}

/// Whether an io error in the chain below `err` (its first 32 sources) is a timeout.
#[cfg(feature = "hyper")]
fn timed_out(err: &(dyn Error + 'static)) -> bool {
    std::iter::successors(err.source(), |&e| e.source())
        .take(32)
        .any(|e| {
            e.downcast_ref::<std::io::Error>()
                .is_some_and(|io| io.kind() == std::io::ErrorKind::TimedOut)
        })
}

#[cfg(feature = "hyper")]
fn legacy_class(err: &hyper_util::client::legacy::Error) -> Option<Class> {
    if err.is_connect() {
        // Nothing was sent: always safe to try again.
        let category = if timed_out(err) {
            Category::Timeout
        } else {
            Category::Network
        };
        return Some(Class::new(category).with_retryable(true));
    }
    // The kind is private; its name is in the message: `client error (UserAbsoluteUriRequired)`
    // (the user errors have no source).
    if err.to_string().contains("(User") {
        return Some(Class::new(Category::Validation).with_retryable(false));
    }
    // Otherwise the cause (a `hyper::Error`) says more.
    None
}

#[cfg(feature = "hyper")]
fn hyper_class(err: &hyper::Error) -> Option<Class> {
    let class = |category| Some(Class::new(category));
    if err.is_timeout() {
        class(Category::Timeout)
    } else if err.is_body_write_aborted() {
        class(Category::Cancelled)
    } else if err.is_user() {
        // A body that failed (a replay refused, a body timeout): its cause decides; without
        // one, the request itself was unusable.
        match err.source() {
            Some(_) => None,
            None => Some(Class::new(Category::Validation).with_retryable(false)),
        }
    } else if err.is_incomplete_message()
        || err.is_closed()
        || err.is_canceled()
        || err.is_shutdown()
    {
        class(Category::Network)
    } else if err.is_parse() || invalid_body(err) {
        Some(Class::new(Category::ServerError).with_retryable(true))
    } else {
        None
    }
}

/// Whether `err` is a body the peer sent that is not valid HTTP (a chunk-size line that is
/// not hex, a chunk extension with a newline): hyper reports it as a body error whose source
/// is an `io::Error` of kind `InvalidData` or `InvalidInput`, which the default rules would
/// read as the caller's `Validation`. (`is_user` errors, the caller's own body, are read above.)
#[cfg(feature = "hyper")]
fn invalid_body(err: &hyper::Error) -> bool {
    err.source()
        .and_then(|e| e.downcast_ref::<std::io::Error>())
        .is_some_and(|io| {
            matches!(
                io.kind(),
                std::io::ErrorKind::InvalidData | std::io::ErrorKind::InvalidInput
            )
        })
}

/// The class of an error by the transport rules, then palisade's defaults.
pub(crate) fn classify_error(err: &(dyn Error + 'static)) -> Class {
    DEFAULT.classify_error(err)
}

/// The class the default message rules give `text` (a failing response's body); `None` when
/// none matches.
pub(crate) fn classify_message(text: &str) -> Option<Class> {
    DEFAULT.classify_message(text)
}

#[cfg(all(test, feature = "hyper"))]
mod tests {
    use super::*;
    use bytes::Bytes;
    use http_body_util::Empty;
    use hyper_util::rt::TokioIo;

    /// A hyper client connection to a server that accepts and says nothing; `serve` decides
    /// whether the connection's task runs.
    async fn connection() -> (
        hyper::client::conn::http1::SendRequest<Empty<Bytes>>,
        hyper::client::conn::http1::Connection<TokioIo<tokio::net::TcpStream>, Empty<Bytes>>,
        tokio::net::TcpListener,
    ) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let stream = tokio::net::TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .unwrap();
        (send, conn, listener)
    }

    fn request() -> http::Request<Empty<Bytes>> {
        http::Request::get("/").body(Empty::new()).unwrap()
    }

    fn network() -> Option<Class> {
        Some(Class::new(Category::Network))
    }

    #[tokio::test]
    async fn hyper_errors_by_kind() {
        // The connection goes before it sent the request: canceled.
        let (mut send, conn, _listener) = connection().await;
        let response = send.send_request(request());
        drop(conn);
        let err = response.await.unwrap_err();
        assert!(err.is_canceled(), "{err:?}");
        assert_eq!(hyper_class(&err), network());

        // The connection is gone: closed.
        let err = std::future::poll_fn(|cx| send.poll_ready(cx))
            .await
            .unwrap_err();
        assert!(err.is_closed(), "{err:?}");
        assert_eq!(hyper_class(&err), network());

        // The server hangs up before answering: an incomplete message.
        let (mut send, conn, listener) = connection().await;
        let task = tokio::spawn(conn);
        let (socket, _) = listener.accept().await.unwrap();
        let response = send.send_request(request());
        drop(socket);
        let err = response.await.unwrap_err();
        assert!(err.is_incomplete_message(), "{err:?}");
        assert_eq!(hyper_class(&err), network());
        let _ = task.await;
    }
}
