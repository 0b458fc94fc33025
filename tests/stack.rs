//! Whole stacks built through the facade.

use palisade::classify::{Category, ClassifyLayer, DefaultClassifier, class_of};
use palisade_test::{Flaky, Step};
use tower::{ServiceBuilder, ServiceExt};

#[tokio::test(start_paused = true)]
async fn classify_behind_the_facade_reads_every_failure() {
    let flaky = Flaky::script(vec![
        Step::Err("429 rate limit, retry after 2"),
        Step::Err("connection reset"),
        Step::Ok(1),
    ]);
    let svc = ServiceBuilder::new()
        .layer(ClassifyLayer::new(DefaultClassifier::default()))
        .service(flaky.clone());

    let err = svc.clone().oneshot("q").await.unwrap_err();
    let class = class_of(&err);
    assert_eq!(class.category, Category::RateLimited);
    assert_eq!(class.retry_after, Some(std::time::Duration::from_secs(2)));

    let err = svc.clone().oneshot("q").await.unwrap_err();
    assert_eq!(class_of(&err).category, Category::Network);
    assert!(class_of(&err).counts_against_health());

    assert_eq!(svc.clone().oneshot("q").await.unwrap(), 1);
    assert_eq!(flaky.calls(), 3);
}

/// retry → route → classify: a retry never goes back to the replica that just failed it.
#[tokio::test(start_paused = true)]
async fn retries_go_to_another_replica() {
    use palisade::classify::BoxError;
    use palisade::retry::RetryLayer;
    use palisade::route::{Route, RouteConfig};
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use tower::{Layer, Service, service_fn};

    let calls: Arc<[AtomicUsize; 2]> = Arc::new([AtomicUsize::new(0), AtomicUsize::new(0)]);
    let replica = |i: usize| {
        let calls = calls.clone();
        ClassifyLayer::new(DefaultClassifier::default()).layer(service_fn(move |_: u32| {
            calls[i].fetch_add(1, Ordering::SeqCst);
            async move {
                if i == 0 {
                    Err::<usize, BoxError>("503 service unavailable".into())
                } else {
                    Ok(i)
                }
            }
        }))
    };
    // No ejection, so every request may pick the bad replica first.
    let mut cfg = RouteConfig::default();
    cfg.outlier.consecutive_failures = 0;
    let route = Route::new(cfg, [replica(0), replica(1)]).unwrap();
    let mut svc = ServiceBuilder::new()
        .layer(
            RetryLayer::builder()
                .max_attempts(2)
                .seed(1)
                .build()
                .unwrap(),
        )
        .service(route);
    for n in 0..200u32 {
        assert_eq!(svc.ready().await.unwrap().call(n).await.unwrap(), 1);
    }
    // The bad replica is picked until its 10th failure makes it Failed (the reference design's
    // threshold); each of those failures was retried once, on the good replica, and every
    // request succeeded with two attempts at most.
    assert_eq!(calls[0].load(Ordering::SeqCst), 10);
    assert_eq!(calls[1].load(Ordering::SeqCst), 200);
}
