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
