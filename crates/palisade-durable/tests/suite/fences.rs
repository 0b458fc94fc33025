//! Fences that must hold under a race: a lifecycle's write after its slot was pruned, a second
//! start, and a 2PC decision that one unreachable participant must not keep from the others.

use std::sync::Arc;
use std::time::Duration;

use palisade_core::BoxError;
use palisade_durable::checkpoint::Checkpoints;
use palisade_durable::error::LifecycleError;
use palisade_durable::lifecycle::{Lifecycle, Phase};
use palisade_durable::store::Store;
use palisade_durable::twopc::{
    self, Coordinator, Participant, PhaseRequest, TransactionDefinition, TxState, Vote,
};
use palisade_retry::{Backoff, Jitter};
use serde_json::json;
use tower::service_fn;

use super::faults::Faulty;

/// A stale handle (it knows version 1) checks the stored versions, finds none newer, and
/// writes version 2. In between, the live handle moves the agent on twice (versions 2 and 3;
/// `keep_last(1)` prunes 2). The stale write of version 2 then finds the slot free: it must
/// be refused as `Stale` (lifecycle docs: "the transition is refused with
/// LifecycleError::Stale and nothing is saved").
pub(crate) async fn a_stale_lifecycle_write_after_a_pruned_version_is_refused(
    store: Arc<dyn Store>,
) {
    let faulty = Arc::new(Faulty::new(store.clone()));
    let direct = Checkpoints::new(store.clone()).keep_last(1).unwrap();
    let via_faulty = Checkpoints::new(faulty.clone() as Arc<dyn Store>)
        .keep_last(1)
        .unwrap();
    let mut live = Lifecycle::start(direct.clone(), "mailer").await.unwrap();
    let mut stale = Lifecycle::resume(via_faulty, "mailer").await.unwrap();
    *faulty.before_checkpoint_put.0.lock().unwrap() = Some(Box::pin(async move {
        live.transition(Phase::Waiting, json!(null)).await.unwrap();
        live.transition(Phase::Processing, json!({"page": 42}))
            .await
            .unwrap();
    }));
    let r = stale.transition(Phase::Failed, json!("gave up")).await;
    let newest = Lifecycle::resume(direct, "mailer").await.unwrap();
    assert_eq!(
        (newest.phase(), newest.version()),
        (Phase::Processing, 3),
        "the live handle's state is the agent's"
    );
    assert!(
        matches!(r, Err(LifecycleError::Stale { known: 1, .. })),
        "stale handle's transition to Failed was accepted: {r:?}; it now believes {:?} v{}",
        stale.phase(),
        stale.version()
    );
}

/// Two starts of one agent at once: "one succeeds, the other gets Exists". Here the second
/// start checks (no versions), then the first starts the agent and moves it on once
/// (`keep_last(1)` prunes version 1), then the second writes version 1.
pub(crate) async fn a_second_start_after_a_pruned_first_version_is_refused(store: Arc<dyn Store>) {
    let faulty = Arc::new(Faulty::new(store.clone()));
    let direct = Checkpoints::new(store.clone()).keep_last(1).unwrap();
    let via_faulty = Checkpoints::new(faulty.clone() as Arc<dyn Store>)
        .keep_last(1)
        .unwrap();
    let other = direct.clone();
    *faulty.before_checkpoint_put.0.lock().unwrap() = Some(Box::pin(async move {
        let mut first = Lifecycle::start(other, "crawler").await.unwrap();
        first.transition(Phase::Waiting, json!(null)).await.unwrap();
    }));
    let second = Lifecycle::start(via_faulty, "crawler").await;
    let newest = Lifecycle::resume(direct, "crawler").await.unwrap();
    assert_eq!((newest.phase(), newest.version()), (Phase::Waiting, 2));
    assert!(
        matches!(second, Err(LifecycleError::Exists(_))),
        "both starts succeeded: {:?}",
        second.map(|l| (l.phase(), l.version()))
    );
}

/// One participant that stays unreachable for the decision keeps every participant after it
/// from ever hearing the decision, through `run` and any number of recoveries: they hold
/// their prepared state (locks) for as long as the first one is down.
pub(crate) async fn tx_one_unreachable_participant_does_not_starve_the_others(
    store: Arc<dyn Store>,
) {
    let heard = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let p = |name: &'static str, down: bool| {
        let heard = heard.clone();
        Participant::new(
            name,
            service_fn(move |req: PhaseRequest| {
                let heard = heard.clone();
                async move {
                    if req.phase != twopc::Phase::Prepare {
                        if down {
                            return Err::<Vote, BoxError>("connection refused".into());
                        }
                        heard
                            .lock()
                            .unwrap()
                            .push(format!("{name} {:?}", req.phase));
                    }
                    Ok(Vote::Yes)
                }
            }),
        )
    };
    let c = Coordinator::builder(store.clone())
        .define(
            TransactionDefinition::new("order", vec![p("a", true), p("b", false), p("c", false)])
                .unwrap(),
        )
        .delivery_attempts(2)
        .delivery_backoff(
            Backoff::exponential(Duration::from_millis(100), 2.0),
            Jitter::None,
        )
        .build()
        .unwrap();
    let tx = c.run("order", "t1", json!(null)).await.unwrap();
    assert_eq!(tx.state, TxState::Committing);
    for _ in 0..3 {
        tokio::time::sleep(Duration::from_secs(10)).await;
        c.recover().await.unwrap();
    }
    let tx = c.inspect("t1").await.unwrap();
    assert_eq!(
        tx.acknowledged,
        [false, true, true],
        "after run and 3 recoveries (a down throughout), b and c heard: {:?}",
        heard.lock().unwrap()
    );
}
