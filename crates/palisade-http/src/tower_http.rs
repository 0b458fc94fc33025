//! tower-http's `classify` module and palisade's classifiers, both ways (feature `tower-http`).
//!
//! - [`FromTowerHttp`] makes palisade's classify layer decide with a tower-http classifier:
//!   `ServerErrorsAsFailures`, `StatusInRangeAsFailures`, `GrpcErrorsAsFailures`, or your own,
//!   as long as its failure class says what went wrong ([`ToClass`]).
//! - [`HttpClassifier`] and [`GrpcClassifier`] implement tower-http's `ClassifyResponse`, with
//!   palisade's [`Class`] as the failure class, so tower-http's `TraceLayer` logs the same
//!   verdict palisade's layers act on
//!   (`TraceLayer::new(SharedClassifier::new(HttpClassifier::new()))`).

use std::fmt;

use http::{HeaderMap, Response, StatusCode};
use palisade_core::{BoxError, Category, Class, Classify};
use tower_http::classify::{
    ClassifiedResponse, ClassifyEos, ClassifyResponse, GrpcFailureClass, NeverClassifyEos,
    ServerErrorsFailureClass, StatusInRangeFailureClass,
};

use crate::HttpClassifier;
use crate::grpc::{Code, GrpcClassifier};
use crate::status::status_class;

/// A tower-http failure class that palisade can read as a [`Class`].
pub trait ToClass {
    /// The class of this failure.
    fn to_class(&self) -> Class;
}

impl ToClass for ServerErrorsFailureClass {
    fn to_class(&self) -> Class {
        match self {
            ServerErrorsFailureClass::StatusCode(status) => failing_status_class(*status),
            ServerErrorsFailureClass::Error(message) => text_class(message),
        }
    }
}

impl ToClass for StatusInRangeFailureClass {
    fn to_class(&self) -> Class {
        match self {
            StatusInRangeFailureClass::StatusCode(status) => failing_status_class(*status),
            StatusInRangeFailureClass::Error(message) => text_class(message),
        }
    }
}

impl ToClass for GrpcFailureClass {
    fn to_class(&self) -> Class {
        match self {
            GrpcFailureClass::Code(code) => Code::from_i32(code.get())
                .class()
                .unwrap_or(Class::new(Category::Unknown)),
            GrpcFailureClass::Error(message) => text_class(message),
        }
    }
}

/// The class of a status tower-http (or the user, with `StatusInRangeAsFailures`) called a
/// failure: palisade's class for it, and a server error for a status palisade would call a
/// success.
fn failing_status_class(status: StatusCode) -> Class {
    status_class(status).unwrap_or(Class::new(Category::ServerError))
}

impl ToClass for Class {
    fn to_class(&self) -> Class {
        *self
    }
}

/// A tower-http `ClassifyResponse` as palisade's [`Classify`]: what it calls a failure is one,
/// with the class of its failure class ([`ToClass`]).
///
/// A response whose verdict waits for the end of the stream (a gRPC 200 with its status in the
/// trailers) passes as a success here; watch its trailers with
/// [`GuardLayer::grpc_trailers`](crate::body::GuardLayer::grpc_trailers). Errors are classified
/// by the [`transport`](crate::transport) rules, which see the error itself rather than
/// tower-http's text of it.
///
/// ```
/// use http::Response;
/// use palisade_core::{BoxError, Category, Classify};
/// use palisade_http::tower_http::FromTowerHttp;
/// use tower_http::classify::ServerErrorsAsFailures;
///
/// let classifier = FromTowerHttp(ServerErrorsAsFailures::new());
/// let busy = Response::builder().status(503).body(()).unwrap();
/// assert_eq!(classifier.classify(&Ok::<_, BoxError>(busy)).unwrap().category, Category::ServerError);
/// // ServerErrorsAsFailures lets a 429 through: so does the adapter.
/// let limited = Response::builder().status(429).body(()).unwrap();
/// assert_eq!(classifier.classify(&Ok::<_, BoxError>(limited)), None);
/// ```
#[derive(Clone, Copy, Debug, Default)]
pub struct FromTowerHttp<C>(pub C);

impl<B, C> Classify<Response<B>, BoxError> for FromTowerHttp<C>
where
    C: ClassifyResponse + Clone,
    C::FailureClass: ToClass,
{
    fn classify(&self, result: &Result<Response<B>, BoxError>) -> Option<Class> {
        match result {
            Ok(response) => match self.0.clone().classify_response(response) {
                ClassifiedResponse::Ready(Ok(())) | ClassifiedResponse::RequiresEos(_) => None,
                ClassifiedResponse::Ready(Err(failure)) => Some(failure.to_class()),
            },
            Err(err) => Some(crate::transport::classify_error(&**err)),
        }
    }

    fn describe(&self, response: &Response<B>) -> Option<std::borrow::Cow<'static, str>> {
        Some(crate::status::describe_status(response.status()))
    }
}

/// The class of an error tower-http only shows as text.
fn text_class(error: &dyn fmt::Display) -> Class {
    crate::transport::classify_error(&*BoxError::from(error.to_string()))
}

impl ClassifyResponse for HttpClassifier {
    type FailureClass = Class;
    type ClassifyEos = NeverClassifyEos<Class>;

    fn classify_response<B>(
        self,
        res: &Response<B>,
    ) -> ClassifiedResponse<Class, Self::ClassifyEos> {
        match HttpClassifier::classify_response(&self, res) {
            Some(class) => ClassifiedResponse::Ready(Err(class)),
            None => ClassifiedResponse::Ready(Ok(())),
        }
    }

    /// The error's text through [`HttpClassifier::classify_error`]: the rules given to
    /// [`HttpClassifierBuilder::errors`](crate::HttpClassifierBuilder::errors) when there are
    /// some, as palisade's layers read them.
    fn classify_error<E>(self, error: &E) -> Class
    where
        E: fmt::Display + 'static,
    {
        HttpClassifier::classify_error(&self, &*BoxError::from(error.to_string()))
    }
}

/// The end of a gRPC stream, for tower-http: the trailers' `grpc-status`. A stream that ends
/// without one (no trailers, or trailers without it) failed with `UNKNOWN`, as gRPC clients
/// read it and as palisade's [`GuardLayer`](crate::body::GuardLayer) judges it.
#[derive(Clone, Debug)]
pub struct GrpcEos(GrpcClassifier);

impl ClassifyEos for GrpcEos {
    type FailureClass = Class;

    fn classify_eos(self, trailers: Option<&HeaderMap>) -> Result<(), Class> {
        match trailers {
            Some(t) if t.contains_key(crate::grpc::GRPC_STATUS) => {
                match self.0.classify_trailers(t) {
                    Some((class, _)) => Err(class),
                    None => Ok(()),
                }
            }
            _ => Err(self.0.missing_status()),
        }
    }

    fn classify_error<E>(self, error: &E) -> Class
    where
        E: fmt::Display + 'static,
    {
        text_class(error)
    }
}

impl ClassifyResponse for GrpcClassifier {
    type FailureClass = Class;
    type ClassifyEos = GrpcEos;

    fn classify_response<B>(self, res: &Response<B>) -> ClassifiedResponse<Class, GrpcEos> {
        match GrpcClassifier::classify_response(&self, res) {
            Some(class) => ClassifiedResponse::Ready(Err(class)),
            // The status is in the head (trailers-only), or the HTTP status failed and a
            // code override made it a success: no trailers to wait for.
            None if crate::grpc::status_in_head(res) => ClassifiedResponse::Ready(Ok(())),
            None => ClassifiedResponse::RequiresEos(GrpcEos(self)),
        }
    }

    fn classify_error<E>(self, error: &E) -> Class
    where
        E: fmt::Display + 'static,
    {
        text_class(error)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tower_http::classify::{
        GrpcErrorsAsFailures, ServerErrorsAsFailures, StatusInRangeAsFailures,
    };

    fn ok(status: u16, headers: &[(&str, &str)]) -> Result<Response<()>, BoxError> {
        let mut b = Response::builder().status(status);
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        Ok(b.body(()).unwrap())
    }

    #[test]
    fn tower_http_classifiers_drive_palisade() {
        let c = FromTowerHttp(ServerErrorsAsFailures::new());
        assert_eq!(c.classify(&ok(200, &[])), None);
        assert_eq!(
            c.classify(&ok(504, &[])).unwrap().category,
            Category::Timeout
        );
        assert!(!c.classify(&ok(501, &[])).unwrap().retryable);
        let err: BoxError = Box::new(std::io::Error::from(std::io::ErrorKind::ConnectionReset));
        let err: Result<Response<()>, BoxError> = Err(err);
        assert_eq!(c.classify(&err).unwrap().category, Category::Network);

        // Whatever range the user chose: its failures get palisade's classes.
        let c = FromTowerHttp(StatusInRangeAsFailures::new(400..=599));
        assert_eq!(
            c.classify(&ok(429, &[])).unwrap().category,
            Category::RateLimited
        );
        assert_eq!(c.classify(&ok(399, &[])), None);
        let c = FromTowerHttp(StatusInRangeAsFailures::new(300..=599));
        assert_eq!(
            c.classify(&ok(302, &[])).unwrap().category,
            Category::ServerError
        );
        let c = FromTowerHttp(GrpcErrorsAsFailures::new());
        assert_eq!(
            c.classify(&ok(200, &[("grpc-status", "14")]))
                .unwrap()
                .category,
            Category::Network
        );
        // Status in the trailers: no verdict yet.
        assert_eq!(c.classify(&ok(200, &[])), None);

        // A failing response is described by its status, as palisade's own classifiers do.
        let r = Response::builder().status(503).body(()).unwrap();
        let described = c.describe(&r).expect("a description");
        assert!(described.contains("503"), "{described}");
    }

    #[test]
    fn palisade_classifiers_drive_tower_http() {
        let r = Response::builder().status(429).body(()).unwrap();
        match ClassifyResponse::classify_response(HttpClassifier::new(), &r) {
            ClassifiedResponse::Ready(Err(class)) => {
                assert_eq!(class.category, Category::RateLimited)
            }
            _ => panic!("a 429 is a failure"),
        }
        let r = Response::builder().status(200).body(()).unwrap();
        assert!(matches!(
            ClassifyResponse::classify_response(HttpClassifier::new(), &r),
            ClassifiedResponse::Ready(Ok(()))
        ));
        assert_eq!(
            ClassifyResponse::classify_error(HttpClassifier::new(), &"connection refused").category,
            Category::Network
        );

        // gRPC: the verdict waits for the trailers.
        let ClassifiedResponse::RequiresEos(eos) =
            ClassifyResponse::classify_response(GrpcClassifier::new(), &r)
        else {
            panic!("a gRPC 200 without grpc-status waits for its trailers");
        };
        let mut trailers = HeaderMap::new();
        trailers.insert("grpc-status", "4".parse().unwrap());
        assert_eq!(
            eos.clone()
                .classify_eos(Some(&trailers))
                .unwrap_err()
                .category,
            Category::Timeout
        );
        trailers.insert("grpc-status", "0".parse().unwrap());
        assert!(eos.clone().classify_eos(Some(&trailers)).is_ok());
        // A stream that ends without a status failed (`UNKNOWN`), as the body guard says.
        let unknown = GrpcClassifier::new().missing_status();
        assert_eq!(eos.clone().classify_eos(None), Err(unknown));
        let mut other = HeaderMap::new();
        other.insert("x-checksum", "1".parse().unwrap());
        assert_eq!(eos.classify_eos(Some(&other)), Err(unknown));
        // A trailers-only answer (grpc-status 0 in the headers) is a success at once: nothing
        // to wait for.
        let r = Response::builder()
            .status(200)
            .header("grpc-status", "0")
            .body(())
            .unwrap();
        assert!(matches!(
            ClassifyResponse::classify_response(GrpcClassifier::new(), &r),
            ClassifiedResponse::Ready(Ok(()))
        ));
    }

    /// `TraceLayer` logs the verdict palisade's layers act on: an error is classified by the
    /// rules given to [`HttpClassifierBuilder::errors`](crate::HttpClassifierBuilder::errors)
    /// on both sides, not by the default rules on tower-http's.
    #[test]
    fn tower_http_errors_get_the_classifiers_own_rules() {
        let errors = palisade_core::DefaultClassifier::builder()
            .message("model is loading", Class::new(Category::Transient))
            .build()
            .unwrap();
        let c = HttpClassifier::builder().errors(errors).build().unwrap();
        let message = "model is loading, try later";
        let palisade = c
            .classify(&Err::<Response<()>, BoxError>(message.into()))
            .unwrap();
        assert_eq!(palisade.category, Category::Transient);
        assert_eq!(ClassifyResponse::classify_error(c, &message), palisade);
    }

    /// A gRPC response whose failing HTTP status a code override makes a success has its
    /// verdict in its head, as palisade's guard and stream breaker read it: tower-http is not
    /// told to wait for trailers that such a response never carries.
    #[test]
    fn a_non_200_grpc_response_made_a_success_is_ready_at_its_head() {
        let lenient = GrpcClassifier::builder()
            .success(Code::Unimplemented)
            .build()
            .unwrap();
        let r = Response::builder().status(404).body(()).unwrap();
        assert_eq!(lenient.classify(&Ok::<_, BoxError>(r)), None);
        let r = Response::builder().status(404).body(()).unwrap();
        assert!(matches!(
            ClassifyResponse::classify_response(lenient, &r),
            ClassifiedResponse::Ready(Ok(()))
        ));
    }
}
