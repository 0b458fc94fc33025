//! Every layer stacks where tower's own do: over a service whose response is `Send` but not
//! `Sync` (as an axum or hyper response body is not), whose request is not `Clone` where the
//! layer has no reason to clone it, and over tower's `BoxCloneService` (not `Sync`). These
//! tests fail to compile if a layer asks for a bound it does not need.

use std::cell::Cell;
use std::time::Duration;

use palisade::breaker::BreakerLayer;
use palisade::classify::{BoxError, Category, Class, ClassifyLayer, DefaultClassifier, class_of};
use palisade::fallback::{Alternative, FallbackLayer, FromError};
use palisade::retry::RetryLayer;
use palisade::timeout::{DeadlineLayer, TimeoutLayer};
use tower::util::BoxCloneService;
use tower::{Layer, Service, ServiceBuilder, ServiceExt, service_fn};

/// A response body that is `Send` but not `Sync`.
#[derive(Debug, PartialEq)]
struct Body(Cell<u32>);

/// A request that is not `Clone` (a streaming body, say).
#[derive(Debug)]
struct Once(u32);

fn answers(
    fail: bool,
) -> impl Service<Once, Response = Body, Error = BoxError, Future: Send> + Clone {
    service_fn(move |req: Once| async move {
        if fail {
            Err::<Body, BoxError>("503 service unavailable".into())
        } else {
            Ok(Body(Cell::new(req.0)))
        }
    })
}

fn assert_send<T: Send>(t: T) -> T {
    t
}

#[tokio::test(start_paused = true)]
async fn layers_that_never_clone_take_a_request_that_is_not_clone_and_a_response_that_is_not_sync()
{
    let svc = ServiceBuilder::new()
        .layer(FallbackLayer::new(FromError(|_: Class, _: &BoxError| {
            Ok::<_, BoxError>(Body(Cell::new(0)))
        })))
        .layer(DeadlineLayer::new(Duration::from_secs(5)))
        .layer(BreakerLayer::new("tool"))
        .layer(TimeoutLayer::new(Duration::from_secs(1)))
        .layer(ClassifyLayer::new(DefaultClassifier::default()))
        .service(answers(false));
    let answer = assert_send(svc.clone().oneshot(Once(7))).await.unwrap();
    assert_eq!(answer.into_inner(), Body(Cell::new(7)));

    let failing = ServiceBuilder::new()
        .layer(FallbackLayer::new(FromError(|_: Class, _: &BoxError| {
            Ok::<_, BoxError>(Body(Cell::new(0)))
        })))
        .layer(ClassifyLayer::new(DefaultClassifier::default()))
        .service(answers(true));
    let answer = failing.oneshot(Once(7)).await.unwrap();
    assert!(answer.degraded().is_some());
}

/// Retry clones requests (it must, to send one again) but asks nothing of the response or of
/// the error beyond `Into<BoxError>`, as every other layer.
#[tokio::test(start_paused = true)]
async fn retry_needs_a_clone_of_the_request_only() {
    #[derive(Clone, Debug)]
    struct Prompt(u32);
    #[derive(Debug)]
    struct NotBoxed;
    impl std::fmt::Display for NotBoxed {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("503 service unavailable")
        }
    }
    impl std::error::Error for NotBoxed {}

    let calls = std::sync::Arc::new(std::sync::atomic::AtomicU32::new(0));
    let counter = calls.clone();
    let tool = service_fn(move |p: Prompt| {
        let n = counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        async move {
            if n == 0 {
                Err(NotBoxed)
            } else {
                Ok(Body(Cell::new(p.0)))
            }
        }
    });
    let svc = RetryLayer::new().layer(tool);
    let answer = svc.oneshot(Prompt(3)).await.unwrap();
    assert_eq!(answer, Body(Cell::new(3)));
    assert_eq!(calls.load(std::sync::atomic::Ordering::SeqCst), 2);
}

/// tower's `BoxCloneService` is `Send` but not `Sync`: it works under every layer, and as the
/// service of an `Alternative` fallback.
#[tokio::test(start_paused = true)]
async fn box_clone_service_stacks_and_serves_as_an_alternative() {
    type Boxed = BoxCloneService<Once, Body, BoxError>;
    let primary: Boxed = BoxCloneService::new(answers(true));
    let backup: Boxed = BoxCloneService::new(answers(false));
    // The alternative answers from the request, so here the request must be Clone: a
    // request type of its own.
    #[derive(Clone, Debug)]
    struct Prompt(u32);
    let to_once = |s: Boxed| BoxCloneService::new(s.map_request(|p: Prompt| Once(p.0)));
    let svc = ServiceBuilder::new()
        .layer(FallbackLayer::new(Alternative::new(to_once(backup))))
        .layer(DeadlineLayer::new(Duration::from_secs(5)))
        .layer(BreakerLayer::new("tool"))
        .layer(TimeoutLayer::new(Duration::from_secs(1)))
        .layer(ClassifyLayer::new(DefaultClassifier::default()))
        .service(to_once(primary));
    let answer = assert_send(svc.oneshot(Prompt(9))).await.unwrap();
    assert_eq!(answer.degraded().unwrap().strategy, "service");
    assert_eq!(answer.into_inner(), Body(Cell::new(9)));
}

/// The classify layer turns a failing response that is not `Sync` into an error the layers
/// above read.
#[tokio::test(start_paused = true)]
async fn a_failing_response_that_is_not_sync_reaches_the_layers_above() {
    let classifier = palisade::classify::classify_fn(|r: &Result<Body, BoxError>| match r {
        Ok(b) if b.0.get() >= 500 => Some(Class::new(Category::ServerError)),
        Ok(_) => None,
        Err(_) => Some(Class::new(Category::Unknown)),
    });
    let svc = ServiceBuilder::new()
        .layer(BreakerLayer::new("tool"))
        .layer(ClassifyLayer::new(classifier))
        .service(answers(false));
    let err = svc.oneshot(Once(503)).await.unwrap_err();
    assert_eq!(class_of(&err).category, Category::ServerError);
}

/// The preset asks for a clone of the request (its retry does) and nothing of the response.
#[tokio::test(start_paused = true)]
async fn the_preset_takes_a_response_that_is_not_sync() {
    use palisade::ServiceBuilderExt;

    #[derive(Clone, Debug)]
    struct Prompt(u32);
    let tool = service_fn(|p: Prompt| async move { Ok::<_, BoxError>(Body(Cell::new(p.0))) });
    let svc = ServiceBuilder::new()
        .palisade(palisade::preset::recommended("tool").build().unwrap())
        .service(tool);
    let answer = assert_send(svc.oneshot(Prompt(4))).await.unwrap();
    assert_eq!(answer, Body(Cell::new(4)));
}
