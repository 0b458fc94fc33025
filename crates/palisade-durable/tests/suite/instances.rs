//! Claims by engine instance: every engine draws an instance token when it is built, and its
//! claims record it with the owner name. Two live engines under one name never take each
//! other's work; a restart under the name (a new instance) takes over the work of the one
//! before once its heartbeat has visibly stopped (its claim last renewed more than seven
//! twelfths of a lease ago), well before the lease runs out; another owner still waits for
//! the whole lease.

use std::sync::Arc;
use std::time::Duration;

use palisade_durable::error::StoreError;
use palisade_durable::journal::SagaState;
use palisade_durable::store::{Append, Claim, Store};
use serde_json::json;
use tokio::time::{Instant, sleep};

use super::leases::{LEASE, engine, lines_starting, outlast_three_leases_against, still};
use super::sagas::{Act, Calls, crash, saga, step, undoable};

fn conflict<T: std::fmt::Debug>(r: Result<T, StoreError>) -> bool {
    matches!(r, Err(StoreError::Conflict(_)))
}

/// Entry `seq` of saga `id`, written by instance `instance` of owner `a` at `at_ms`, its
/// claim lasting until `until`.
fn by(id: &str, seq: u64, instance: &str, at_ms: u64, until: u64) -> Append {
    Append::new(
        id,
        "saga",
        "order",
        seq,
        at_ms,
        json!({ "n": seq }),
        "running",
        "a",
        until,
    )
    .with_instance(instance)
}

/// A claim of saga `id` by instance `instance` of `owner` at `now`, for a 12 s lease (seven
/// twelfths of it: 7 s).
fn claim(owner: &str, instance: &str, id: &str, now: u64) -> Claim {
    Claim::new("saga", &["running"], owner, now, now + 12_000, 10)
        .with_instance(instance)
        .only(id)
}

/// The store's rules: only the holding instance appends, renews and releases; another
/// instance of the owner claims once the claim was last renewed more than seven twelfths of
/// its lease ago; another owner once the lease ended; the empty instance matches any; a
/// renewal that does not say when it was sent leaves the claim to run its whole lease.
pub(crate) async fn instances_of_one_owner_fence_each_other(store: Arc<dyn Store>) {
    // w: started by i1 of a at 1 000 with a 12 s lease (until 13 000).
    store.append(by("w", 0, "i1", 1_000, 13_000)).await.unwrap();
    for now in [1_000, 5_000, 8_000] {
        let got = store.claim(claim("a", "i2", "w", now)).await.unwrap();
        assert!(got.is_empty(), "i2 took w at {now}");
    }
    // i2 cannot write, renew or give it back.
    assert!(conflict(
        store.append(by("w", 1, "i2", 2_000, 14_000)).await
    ));
    assert!(conflict(
        store.renew_instance("w", "a", "i2", 2_000, 14_000).await
    ));
    assert!(conflict(store.release_instance("w", "a", "i2").await));
    // i1 renews at 5 000; a late renewal sent earlier moves neither time back.
    store
        .renew_instance("w", "a", "i1", 5_000, 17_000)
        .await
        .unwrap();
    store
        .renew_instance("w", "a", "i1", 4_000, 16_000)
        .await
        .unwrap();
    let w = store.workflow("w").await.unwrap().unwrap();
    assert_eq!((w.owner.as_deref(), w.lease_until_ms), (Some("a"), 17_000));
    // Renewed at 5 000 for 12 s: seven twelfths (7 s) later, not yet; a millisecond more, yes.
    assert!(
        store
            .claim(claim("a", "i2", "w", 12_000))
            .await
            .unwrap()
            .is_empty()
    );
    // Another owner waits for the lease.
    assert!(
        store
            .claim(claim("b", "x", "w", 12_001))
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        store.claim(claim("a", "i2", "w", 12_001)).await.unwrap(),
        ["w"]
    );
    // Now i2 holds it: i1 is fenced out, as a displaced holder is.
    assert!(conflict(
        store.append(by("w", 1, "i1", 12_100, 24_100)).await
    ));
    assert!(conflict(
        store.renew_instance("w", "a", "i1", 12_100, 24_100).await
    ));
    assert!(conflict(store.release_instance("w", "a", "i1").await));
    // i2's entry renews the claim (at 12 500, until 24 500): i1 waits for 19 500.
    store
        .append(by("w", 1, "i2", 12_500, 24_500))
        .await
        .unwrap();
    assert!(
        store
            .claim(claim("a", "i1", "w", 19_500))
            .await
            .unwrap()
            .is_empty()
    );
    assert!(
        store
            .claim(claim("b", "x", "w", 24_500))
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        store.claim(claim("b", "x", "w", 24_501)).await.unwrap(),
        ["w"]
    );
    // The instance stays the claimer's only: b's x holds it, a's x does not.
    assert!(conflict(
        store.append(by("w", 2, "x", 24_600, 30_000)).await
    ));

    // v: the empty instance matches any instance of the owner, as before instances; a
    // renewal that does not say when it was sent (`renew`) leaves the claim to its lease.
    store.append(by("v", 0, "i1", 1_000, 13_000)).await.unwrap();
    store.renew("v", "a", 13_000).await.unwrap();
    assert!(
        store
            .claim(claim("a", "i2", "v", 13_000))
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        store.claim(claim("a", "i2", "v", 13_001)).await.unwrap(),
        ["v"]
    );
    assert_eq!(
        store.claim(claim("a", "", "v", 13_002)).await.unwrap(),
        ["v"],
        "the empty instance takes its owner's own at once"
    );
    store.append(by("v", 1, "", 13_003, 25_003)).await.unwrap();
    store.release_instance("v", "a", "i9").await.unwrap_err();
    store.release("v", "a").await.unwrap();
    assert_eq!(store.workflow("v").await.unwrap().unwrap().owner, None);
}

/// Engines `a` and `b`, live, under the same owner name on one store: while `a` runs a step
/// longer than three leases (renewing its claim), `b` recovers every quarter of a lease and
/// never takes the saga; the step runs once and `a` finishes the saga.
pub(crate) async fn a_live_engine_s_saga_is_not_taken_by_another_under_its_name(
    store: Arc<dyn Store>,
) {
    let (info, lines) = outlast_three_leases_against(store, "n1", "a", |log, gate| {
        vec![
            undoable("a", log, Act::Ok, Act::Ok),
            step("slow", log, Act::WaitFirst(1, gate.clone())),
        ]
    })
    .await;
    assert_eq!(info.state, SagaState::Completed);
    assert_eq!(lines_starting(&lines, "do slow"), 1, "{lines:?}");
    assert_eq!(lines_starting(&lines, "undo"), 0, "{lines:?}");
}

/// Engine `a` dies in a step (it stops renewing); how long until engine `later` (built
/// afterwards, under `owner`) takes the saga over: recovers every half second until it does.
async fn taken_over_after(store: Arc<dyn Store>, id: &str, owner: &str) -> Duration {
    let store = still(store);
    let log = Arc::new(Calls::default());
    let def = || {
        saga(
            "t",
            vec![step("slow", &log, Act::HangFirst(1)).idempotent()],
        )
    };
    let a = engine(&store, "a", def());
    crash(&a, &log, "t", id).await;
    drop(a);
    let t0 = Instant::now();
    let later = engine(&store, owner, def());
    loop {
        let r = later.recover().await.unwrap();
        if let [info] = &r.resumed[..] {
            assert_eq!(info.state, SagaState::Completed);
            assert_eq!(info.steps[0].attempts, 2);
            return t0.elapsed();
        }
        assert!(r.resumed.is_empty() && r.failed.is_empty(), "{r:?}");
        assert!(t0.elapsed() < 2 * LEASE, "never taken over");
        sleep(Duration::from_millis(500)).await;
    }
}

/// A restart under the same name (a new instance) takes the saga of the engine that died
/// once its claim was last renewed more than seven twelfths of the lease ago (5.83 s of 10 s),
/// well before the lease runs out.
pub(crate) async fn a_restart_under_the_same_name_takes_over_before_the_lease_ends(
    store: Arc<dyn Store>,
) {
    let after = taken_over_after(store, "r1", "a").await;
    assert_eq!(after, Duration::from_secs(6), "{after:?}");
}

/// Another owner still waits for the whole lease (10 s).
pub(crate) async fn another_owner_still_waits_the_whole_lease(store: Arc<dyn Store>) {
    let after = taken_over_after(store, "r2", "b").await;
    assert_eq!(after, Duration::from_millis(10_500), "{after:?}");
}

/// A rolling deploy with every replica under one owner name (the default `"local"`): the
/// engine of a version without the saga's definition recovers first and gives the saga back;
/// the engine of a version with it, under the same name, takes it at its next recovery, as an
/// engine under another name does, and finishes it. A release kept every engine of the name
/// off for the lease the first had just taken (so the saga waited that lease, and longer while
/// the first kept taking it back first), although the docs say a process that can drive it
/// gets it at once. In the store: only the instance that gave the claim back waits for its
/// lease, and so does the empty instance (any instance).
pub(crate) async fn a_saga_given_back_goes_to_another_instance_of_its_owner_at_once(
    store: Arc<dyn Store>,
) {
    let store = still(store);
    let log = Arc::new(Calls::default());
    let def = || {
        saga(
            "t",
            vec![step("slow", &log, Act::HangFirst(1)).idempotent()],
        )
    };
    let first = engine(&store, "local", def());
    crash(&first, &log, "t", "d1").await;
    drop(first);
    sleep(LEASE + Duration::from_secs(1)).await;
    let old = engine(
        &store,
        "local",
        saga("other", vec![step("o", &log, Act::Ok)]),
    );
    let new = engine(&store, "local", def());
    let r = old.recover().await.unwrap();
    assert!(
        matches!(&r.failed[..], [(id, palisade_durable::error::SagaError::UnknownDefinition(_))] if id == "d1"),
        "{r:?}"
    );
    let r = new.recover().await.unwrap();
    assert_eq!(
        r.resumed
            .iter()
            .map(|i| (i.id.as_str(), i.state))
            .collect::<Vec<_>>(),
        [("d1", SagaState::Completed)]
    );
    // In the store: given back by i1 of a, it is kept from i1 and from the empty instance
    // (any instance of a) for the lease i1 held, not from i2.
    store.append(by("g", 0, "i1", 1_000, 13_000)).await.unwrap();
    store.release_instance("g", "a", "i1").await.unwrap();
    for instance in ["i1", ""] {
        let got = store.claim(claim("a", instance, "g", 2_000)).await.unwrap();
        assert!(got.is_empty(), "{instance:?} took g back");
    }
    assert_eq!(
        store.claim(claim("a", "i2", "g", 2_000)).await.unwrap(),
        ["g"]
    );
}
