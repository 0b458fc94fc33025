//! Every stack can be called from a spawned task, the way a handler or an agent loop does it:
//! `tokio::spawn(async move { svc.ready().await?.call(req).await })`. These tests fail to
//! compile if a layer's future names its inner service's future through a projection
//! (`S::Future`) that rustc cannot prove `Send` inside an `async` block (rust-lang/rust#64552:
//! where an inner layer answers `BoxError`, the auto-trait check asks for
//! `BoxError: From<Box<dyn Error + Send + Sync + '0>>` for every lifetime `'0`, and fails).
//!
//! The futures are named only by their concrete types here, as in an application: a generic
//! helper with a `Send` bound would prove it from its where-clause and hide the failure.

use std::time::Duration;

use palisade::ServiceBuilderExt;
use palisade::breaker::BreakerLayer;
use palisade::classify::{BoxError, Category, Class, ClassifyLayer, DefaultClassifier};
use palisade::retry::RetryLayer;
use palisade::timeout::{DeadlineLayer, TimeoutLayer};
use tower::{Layer, Service, ServiceBuilder, ServiceExt, service_fn};

/// Spawns one call through `$svc` in an `async` block and returns its answer.
macro_rules! spawned {
    ($svc:expr, $req:expr) => {{
        let mut svc = $svc;
        let req = $req;
        tokio::spawn(async move { svc.ready().await?.call(req).await })
            .await
            .expect("the spawned call panicked")
    }};
}

/// The service every stack wraps: echoes the prompt, or fails with a 503 for `"fail"`.
macro_rules! echo {
    () => {
        service_fn(|prompt: String| async move {
            if prompt == "fail" {
                Err::<String, BoxError>("503 service unavailable".into())
            } else {
                Ok(prompt)
            }
        })
    };
}

#[tokio::test(start_paused = true)]
async fn the_preset() {
    let svc = ServiceBuilder::new()
        .palisade(palisade::preset::recommended("llm").build().unwrap())
        .service(echo!());
    assert_eq!(spawned!(svc.clone(), "hi".to_owned()).unwrap(), "hi");
    let err = spawned!(svc, "fail".to_owned()).unwrap_err();
    assert_eq!(
        palisade::classify::class_of(&err).category,
        Category::ServerError
    );
}

#[tokio::test(start_paused = true)]
async fn each_layer_over_another() {
    let timeout = || TimeoutLayer::new(Duration::from_secs(1)).layer(echo!());
    let svc = RetryLayer::new().layer(BreakerLayer::new("llm").layer(timeout()));
    assert_eq!(spawned!(svc, "retry".to_owned()).unwrap(), "retry");
    let svc = BreakerLayer::new("llm").layer(timeout());
    assert_eq!(spawned!(svc, "breaker".to_owned()).unwrap(), "breaker");
    let svc = DeadlineLayer::new(Duration::from_secs(5)).layer(timeout());
    assert_eq!(spawned!(svc, "deadline".to_owned()).unwrap(), "deadline");
    let svc = ClassifyLayer::new(DefaultClassifier::default()).layer(timeout());
    assert_eq!(spawned!(svc, "classify".to_owned()).unwrap(), "classify");
    let svc = TimeoutLayer::new(Duration::from_secs(2)).layer(timeout());
    assert_eq!(spawned!(svc, "timeout".to_owned()).unwrap(), "timeout");
    let svc = palisade::fallback::FallbackLayer::new(palisade::fallback::FromError(
        |_: Class, _: &BoxError| Ok::<_, BoxError>("fallback".to_owned()),
    ))
    .layer(timeout());
    assert_eq!(
        spawned!(svc, "fail".to_owned()).unwrap().into_inner(),
        "fallback"
    );
    let svc = palisade::breaker::KeyedBreakerLayer::new("llm", |prompt: &String| prompt.len())
        .layer(timeout());
    assert_eq!(spawned!(svc, "keyed".to_owned()).unwrap(), "keyed");
    let chaos = palisade::chaos::ChaosLayer::<String>::builder()
        .build()
        .unwrap();
    let svc = chaos.layer(timeout());
    assert_eq!(spawned!(svc, "chaos".to_owned()).unwrap(), "chaos");
    let svc = palisade::classify::trace::TraceLayer::new("llm").layer(timeout());
    assert_eq!(spawned!(svc, "trace".to_owned()).unwrap(), "trace");
    let svc = palisade::classify::metrics::MetricsLayer::new("llm").layer(timeout());
    assert_eq!(spawned!(svc, "metrics".to_owned()).unwrap(), "metrics");
    let monitor = palisade::health::HealthMonitor::new();
    let svc = monitor.watch("llm").layer(timeout());
    assert_eq!(spawned!(svc, "watch".to_owned()).unwrap(), "watch");
}

#[tokio::test(start_paused = true)]
async fn a_router_under_the_preset() {
    let endpoint = || ClassifyLayer::new(DefaultClassifier::default()).layer(echo!());
    let route = palisade::route::Route::new([endpoint(), endpoint()]);
    let svc = ServiceBuilder::new()
        .palisade(palisade::preset::recommended("llm").build().unwrap())
        .route(route);
    assert_eq!(spawned!(svc, "routed".to_owned()).unwrap(), "routed");
}

#[tokio::test(start_paused = true)]
async fn layers_over_a_boxed_service() {
    let boxed = || tower::util::BoxCloneService::new(echo!());
    let svc = palisade::fallback::FallbackLayer::new(palisade::fallback::FromError(
        |_: Class, _: &BoxError| Ok::<_, BoxError>("fallback".to_owned()),
    ))
    .layer(boxed());
    assert_eq!(
        spawned!(svc, "fail".to_owned()).unwrap().into_inner(),
        "fallback"
    );
    let svc = ServiceBuilder::new()
        .palisade(palisade::preset::recommended("llm").build().unwrap())
        .service(boxed());
    assert_eq!(spawned!(svc, "boxed".to_owned()).unwrap(), "boxed");
    let board = palisade::fallback::Switchboard::new();
    let svc = palisade::fallback::FeatureLayer::new(
        board.feature("search"),
        palisade::fallback::Constant("off".to_owned()),
    )
    .layer(boxed());
    assert_eq!(spawned!(svc, "on".to_owned()).unwrap().into_inner(), "on");
}
