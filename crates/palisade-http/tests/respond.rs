//! The server side as its clients read it: the status a refusal deep in an error chain gets,
//! and a failing gRPC response given back from inside a `FallbackFailed`.

#![cfg(feature = "axum")]

use std::time::Duration;

use http::{Request, Response, StatusCode};
use palisade::classify::{BoxError, ClassifyLayer};
use palisade::route::Route;
use palisade_core::Class;
use palisade_core::failure::NoHealthyEndpoint;
use palisade_fallback::{FallbackLayer, FromError};
use palisade_http::HttpClassifier;
use palisade_http::grpc::{GrpcClassifier, GrpcStatus};
use palisade_http::respond::{ErrorResponseLayer, Responder};
use tower::{Layer, ServiceExt, service_fn};

/// A router with no endpoint that can take the call, below the classify layer, as
/// `ServiceBuilder::new().classify(..).route(..)` (palisade's `ServiceBuilderExt::route`) and
/// the preset (classify right above the router) stack it: `Responder`'s table promises
/// `NoHealthyEndpoint` a 503 Service Unavailable.
#[tokio::test]
async fn no_healthy_endpoint_below_a_classify_layer_is_a_503() {
    type Endpoint = tower::util::BoxCloneSyncService<Request<String>, Response<String>, BoxError>;
    let route: Route<_> = Route::new(Vec::<Endpoint>::new());
    let svc =
        ErrorResponseLayer::new().layer(ClassifyLayer::new(HttpClassifier::new()).layer(route));
    let r = svc.oneshot(Request::new(String::new())).await.unwrap();
    assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE, "{}", r.body());
}

/// The same error, as the classify layer hands it up (inside its `Classified`), to the bare
/// responder; the gRPC mapping finds it in the chain (UNAVAILABLE), the HTTP one does not.
#[test]
fn no_healthy_endpoint_in_a_classified_is_a_503() {
    let none = NoHealthyEndpoint {
        retry_after: Some(Duration::from_millis(1500)),
    };
    let class = palisade_core::class_of(&(Box::new(none) as BoxError));
    let wrapped: BoxError = Box::new(palisade_core::Classified::new(class, none));
    let grpc = GrpcStatus::from_error(&*wrapped);
    assert_eq!(grpc.code, palisade_http::grpc::Code::Unavailable);
    let r: Response<String> = Responder::new().respond(wrapped);
    assert_eq!(r.status(), 503, "{}", r.body());
}

/// A gRPC dependency's failing status, judged by the classify layer, that no fallback could
/// answer (`restore_failed_responses(false)`, so a `FallbackFailed`): the HTTP responder
/// gives the response back ("also inside a FallbackFailed"); the gRPC one, whose docs say a
/// failing response that can be given back is, as it was, answers its own status instead.
#[tokio::test]
async fn grpc_responder_gives_back_a_failing_response_inside_a_fallback_failed() {
    let dependency = service_fn(|_: Request<String>| async {
        Ok::<_, BoxError>(
            Response::builder()
                .header("content-type", "application/grpc")
                .header("grpc-status", "14")
                .header("grpc-message", "backend down")
                .body(String::new())
                .unwrap(),
        )
    });
    let failing = FromError(|_: Class, _: &BoxError| {
        Err::<Response<String>, BoxError>("no cached answer".into())
    });
    let fallback = FallbackLayer::builder(failing)
        .restore_failed_responses(false)
        .build()
        .unwrap();
    let classified = ClassifyLayer::new(GrpcClassifier::new()).layer(dependency);
    // Check the error is what we think it is.
    let err = fallback
        .layer(classified.clone())
        .oneshot(Request::new(String::new()))
        .await
        .unwrap_err();
    assert!(err.is::<palisade_core::failure::FallbackFailed>(), "{err}");
    // HTTP: given back as it was.
    let r: Response<String> = Responder::new().respond(err);
    assert_eq!(r.headers()["grpc-status"], "14");

    let svc = ErrorResponseLayer::grpc().layer(fallback.layer(classified));
    let r = svc.oneshot(Request::new(String::new())).await.unwrap();
    assert_eq!(r.headers()["grpc-status"], "14", "{:?}", r.headers());
    assert_eq!(
        r.headers()["grpc-message"],
        "backend down",
        "{:?}",
        r.headers()
    );
}
