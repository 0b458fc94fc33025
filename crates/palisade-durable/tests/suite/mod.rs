//! The behaviour every store must have.

#![allow(dead_code)]

pub(crate) mod differential;
pub(crate) mod faults;
pub(crate) mod fences;
pub(crate) mod housekeeping;
pub(crate) mod instances;
pub(crate) mod leases;
pub(crate) mod odd;
pub(crate) mod sagas;
pub(crate) mod twopc;

pub(crate) use differential::*;
pub(crate) use faults::*;
pub(crate) use fences::*;
pub(crate) use housekeeping::*;
pub(crate) use instances::*;
pub(crate) use leases::*;
pub(crate) use odd::*;
pub(crate) use sagas::*;
pub(crate) use twopc::*;

use palisade_durable::error::StoreError;
use palisade_durable::store::{Append, Claim, Store, StoredCheckpoint, StoredReview};
use serde_json::json;
use std::sync::Arc;

fn entry(id: &str, seq: u64, owner: &str, state: &str) -> Append {
    Append::new(
        id,
        "saga",
        "order",
        seq,
        1_000 + seq,
        json!({ "n": seq }),
        state,
        owner,
        10_000,
    )
}

pub(crate) async fn append_and_read(store: Arc<dyn Store>) {
    assert!(store.journal("a").await.unwrap().is_empty());
    assert!(store.workflow("a").await.unwrap().is_none());
    for seq in 0..3 {
        store
            .append(entry("a", seq, "w1", "running"))
            .await
            .unwrap();
    }
    store
        .append(entry("b", 0, "w1", "running").with_release(true))
        .await
        .unwrap();
    let j = store.journal("a").await.unwrap();
    assert_eq!(j.iter().map(|e| e.seq).collect::<Vec<_>>(), [0, 1, 2]);
    assert_eq!(j[2].event, json!({ "n": 2 }));
    assert_eq!(j[1].at_ms, 1_001);
    let rec = store.workflow("a").await.unwrap().unwrap();
    assert_eq!(
        (rec.state.as_str(), rec.owner.as_deref(), rec.entries),
        ("running", Some("w1"), 3)
    );
    assert_eq!((rec.created_ms, rec.updated_ms), (1_000, 1_002));
    let all = store.workflows(None).await.unwrap();
    assert_eq!(
        all.iter().map(|w| w.id.as_str()).collect::<Vec<_>>(),
        ["a", "b"]
    );
    assert_eq!(all[1].owner, None, "a released workflow has no owner");
    assert!(store.workflows(Some("2pc")).await.unwrap().is_empty());
    assert_eq!(store.workflows(Some("saga")).await.unwrap().len(), 2);
}

pub(crate) async fn append_conflicts(store: Arc<dyn Store>) {
    store.append(entry("a", 0, "w1", "running")).await.unwrap();
    // The same workflow again.
    assert!(matches!(
        store.append(entry("a", 0, "w1", "running")).await,
        Err(StoreError::Conflict(_))
    ));
    // A gap, a repeat.
    assert!(matches!(
        store.append(entry("a", 2, "w1", "running")).await,
        Err(StoreError::Conflict(_))
    ));
    store.append(entry("a", 1, "w1", "running")).await.unwrap();
    assert!(matches!(
        store.append(entry("a", 1, "w1", "running")).await,
        Err(StoreError::Conflict(_))
    ));
    // Someone without the claim.
    assert!(matches!(
        store.append(entry("a", 2, "w2", "running")).await,
        Err(StoreError::Conflict(_))
    ));
    // An unknown workflow.
    assert!(matches!(
        store.append(entry("zz", 3, "w1", "running")).await,
        Err(StoreError::Conflict(_))
    ));
    // Nothing of the refused appends was written.
    assert_eq!(store.journal("a").await.unwrap().len(), 2);
    assert_eq!(store.workflow("a").await.unwrap().unwrap().entries, 2);
    // A released workflow takes appends only after a claim.
    store
        .append(entry("a", 2, "w1", "escalated").with_release(true))
        .await
        .unwrap();
    assert!(matches!(
        store.append(entry("a", 3, "w1", "running")).await,
        Err(StoreError::Conflict(_))
    ));
}

pub(crate) async fn claims(store: Arc<dyn Store>) {
    // a: held by w1 until 10 000; b: released; c: finished; d: w2's, expired at 10 000.
    store.append(entry("a", 0, "w1", "running")).await.unwrap();
    store
        .append(entry("b", 0, "w1", "compensating").with_release(true))
        .await
        .unwrap();
    store
        .append(entry("c", 0, "w1", "completed").with_release(true))
        .await
        .unwrap();
    store.append(entry("d", 0, "w2", "running")).await.unwrap();
    let states = ["running", "compensating"];
    let claim = |owner: &str, now: u64| Claim::new("saga", &states, owner, now, now + 500, 10);

    // w3 before any lease expires: only the released one.
    assert_eq!(store.claim(claim("w3", 5_000)).await.unwrap(), ["b"]);
    // w5, for running sagas, when a's and d's leases end exactly now: a lease expires only
    // after its end, so nothing yet.
    assert!(
        store
            .claim(Claim::new("saga", &["running"], "w5", 10_000, 10_500, 10))
            .await
            .unwrap()
            .is_empty()
    );
    // w1 takes its own back at once, not w3's fresh claim.
    assert_eq!(store.claim(claim("w1", 5_000)).await.unwrap(), ["a"]);
    // After the leases expired, w4 gets everything unfinished but the kind filter holds.
    let mut got = store.claim(claim("w4", 20_000)).await.unwrap();
    got.sort();
    assert_eq!(got, ["a", "b", "d"]);
    assert!(
        store
            .claim(Claim::new("2pc", &states, "w4", 20_000, 20_500, 10))
            .await
            .unwrap()
            .is_empty()
    );
    let d = store.workflow("d").await.unwrap().unwrap();
    assert_eq!((d.owner.as_deref(), d.lease_until_ms), (Some("w4"), 20_500));
    // The old owner is fenced off.
    assert!(matches!(
        store.append(entry("d", 1, "w2", "running")).await,
        Err(StoreError::Conflict(_))
    ));
    store.append(entry("d", 1, "w4", "running")).await.unwrap();
    // Limit and `only`.
    assert_eq!(
        store
            .claim(Claim::new("saga", &states, "w5", 30_000, 30_500, 1))
            .await
            .unwrap()
            .len(),
        1
    );
    assert_eq!(
        store
            .claim(Claim::new("saga", &states, "w6", 40_000, 40_500, 10).only("d"))
            .await
            .unwrap(),
        ["d"]
    );
}

/// A claim's limit counts only the workflows it may take: many finished (and held) workflows
/// written before the claimable ones do not use it up, and are not handed out. A store that
/// applied its limit before filtering the states (SQL `LIMIT` on every workflow of the kind,
/// states checked afterwards) would return nothing here.
pub(crate) async fn a_claim_s_limit_counts_only_claimable_workflows(store: Arc<dyn Store>) {
    // 60 finished sagas, nobody's; then 5 running ones w9 holds (until 10 000); then the
    // claimable ones, oldest first: released running r0, compensating r1, running r2.
    for i in 0..60 {
        let state = ["completed", "compensated", "failed"][i % 3];
        store
            .append(entry(&format!("f{i:02}"), 0, "w1", state).with_release(true))
            .await
            .unwrap();
    }
    for i in 0..5 {
        store
            .append(entry(&format!("h{i}"), 0, "w9", "running"))
            .await
            .unwrap();
    }
    for (id, state) in [("r0", "running"), ("r1", "compensating"), ("r2", "running")] {
        store
            .append(entry(id, 0, "w1", state).with_release(true))
            .await
            .unwrap();
    }
    let states = ["running", "compensating"];
    let claim = |owner: &str, limit| Claim::new("saga", &states, owner, 5_000, 5_500, limit);
    assert!(
        store.claim(claim("w2", 0)).await.unwrap().is_empty(),
        "a limit of 0"
    );
    assert!(
        store
            .claim(Claim::new("saga", &[], "w2", 5_000, 5_500, 10))
            .await
            .unwrap()
            .is_empty(),
        "no states"
    );
    assert_eq!(store.claim(claim("w2", 2)).await.unwrap(), ["r0", "r1"]);
    assert_eq!(store.claim(claim("w3", 2)).await.unwrap(), ["r2"]);
    assert!(store.claim(claim("w4", 2)).await.unwrap().is_empty());
    // Once w9's claims (and w2's and w3's) expire, they are next, oldest first; the finished
    // ones never are.
    let late = |owner: &str| Claim::new("saga", &states, owner, 20_000, 20_500, 4);
    assert_eq!(
        store.claim(late("w5")).await.unwrap(),
        ["h0", "h1", "h2", "h3"]
    );
    assert_eq!(
        store.claim(late("w6")).await.unwrap(),
        ["h4", "r0", "r1", "r2"]
    );
    assert!(store.claim(late("w7")).await.unwrap().is_empty());
    let finished = store.workflows(Some("saga")).await.unwrap();
    assert!(
        finished
            .iter()
            .filter(|w| w.id.starts_with('f'))
            .all(|w| w.owner.is_none()),
        "a finished workflow was claimed"
    );
}

pub(crate) async fn claims_are_exclusive(store: Arc<dyn Store>) {
    for i in 0..40 {
        store
            .append(entry(&format!("s{i:02}"), 0, "dead", "running"))
            .await
            .unwrap();
    }
    let mut tasks = Vec::new();
    for w in 0..4 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            let mut mine = Vec::new();
            loop {
                let got = store
                    .claim(Claim::new(
                        "saga",
                        &["running"],
                        format!("w{w}"),
                        50_000,
                        90_000,
                        3,
                    ))
                    .await
                    .unwrap();
                if got.is_empty() {
                    return mine;
                }
                for id in &got {
                    // Finish it, so that its owner does not take it back.
                    store
                        .append(entry(id, 1, &format!("w{w}"), "completed").with_release(true))
                        .await
                        .unwrap();
                }
                mine.extend(got);
            }
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    all.sort();
    let n = all.len();
    all.dedup();
    assert_eq!(n, all.len(), "a workflow was claimed twice");
    assert_eq!(n, 40);
}

pub(crate) async fn reviews(store: Arc<dyn Store>) {
    assert!(store.review_get("r1").await.unwrap().is_none());
    let item = |id: &str, status: &str, n: u64| StoredReview {
        id: id.into(),
        workflow_id: "a".into(),
        status: status.into(),
        updated_ms: n,
        body: json!({ "errors": [n] }),
    };
    // Put in an order other than the ids' own, so that "oldest first" cannot come from
    // sorting by id.
    store.review_put(item("r2", "open", 1)).await.unwrap();
    store.review_put(item("r1", "open", 2)).await.unwrap();
    store.review_put(item("r3", "open", 3)).await.unwrap();
    store
        .review_put(item("r1", "retry_requested", 3))
        .await
        .unwrap();
    let list = store.review_list().await.unwrap();
    assert_eq!(
        list.iter()
            .map(|r| (r.id.as_str(), r.status.as_str()))
            .collect::<Vec<_>>(),
        [("r2", "open"), ("r1", "retry_requested"), ("r3", "open")],
        "oldest first, updated in place"
    );
    assert_eq!(
        store.review_get("r1").await.unwrap().unwrap().body,
        json!({ "errors": [3] })
    );
}

/// `review_put_if` writes an item only over the one its caller read (every field alike), or
/// only where there is none; it says whether it wrote, and one that does not write changes
/// nothing. Of writers that read the same item and write at once, exactly one writes.
pub(crate) async fn a_review_item_is_written_only_over_the_one_read(store: Arc<dyn Store>) {
    let item = |status: &str, n: u64| StoredReview {
        id: "r1".into(),
        workflow_id: "a".into(),
        status: status.into(),
        updated_ms: n,
        body: json!({ "errors": [n], "status": status }),
    };
    let get = || async { store.review_get("r1").await.unwrap() };
    // Where there is none: only a write that expects none.
    assert!(
        !store
            .review_put_if(Some(item("open", 1)), item("open", 2))
            .await
            .unwrap()
    );
    assert_eq!(get().await, None, "nothing written");
    assert!(store.review_put_if(None, item("open", 1)).await.unwrap());
    assert_eq!(get().await, Some(item("open", 1)));
    assert!(!store.review_put_if(None, item("open", 2)).await.unwrap());
    assert_eq!(get().await, Some(item("open", 1)), "not replaced");
    // Over the item read: written. Over any other, in any field: not.
    let read = get().await.unwrap();
    let other = |f: &dyn Fn(&mut StoredReview)| {
        let mut r = read.clone();
        f(&mut r);
        r
    };
    for stale in [
        other(&|r| r.status = "retry_requested".into()),
        other(&|r| r.updated_ms = 2),
        other(&|r| r.body = json!({ "errors": [1, 2], "status": "open" })),
        other(&|r| r.workflow_id = "b".into()),
    ] {
        let put = store.review_put_if(Some(stale.clone()), item("retried", 3));
        assert!(!put.await.unwrap(), "written over {stale:?}");
        assert_eq!(get().await, Some(item("open", 1)));
    }
    // Another item, put after this one.
    let r0 = StoredReview {
        id: "r0".into(),
        ..item("open", 0)
    };
    store.review_put(r0).await.unwrap();
    assert!(
        store
            .review_put_if(Some(read), item("retry_requested", 3))
            .await
            .unwrap()
    );
    assert_eq!(get().await, Some(item("retry_requested", 3)));
    // Replaced in place: the list keeps it where it was.
    let ids = |list: Vec<StoredReview>| list.into_iter().map(|r| r.id).collect::<Vec<_>>();
    assert_eq!(ids(store.review_list().await.unwrap()), ["r1", "r0"]);
    // An item it inserts goes after the ones already there, as `review_put`'s do, whatever
    // its id ("q1" sorts first).
    let q1 = StoredReview {
        id: "q1".into(),
        ..item("open", 4)
    };
    assert!(store.review_put_if(None, q1).await.unwrap());
    assert_eq!(ids(store.review_list().await.unwrap()), ["r1", "r0", "q1"]);
    // Eight writers read the same item and write at once: one writes, the others find it
    // changed.
    let read = get().await.unwrap();
    let writers: Vec<_> = (0..8u64)
        .map(|n| {
            let (store, read) = (store.clone(), read.clone());
            tokio::spawn(async move {
                let wrote = store
                    .review_put_if(Some(read), item("retried", 10 + n))
                    .await;
                (n, wrote.unwrap())
            })
        })
        .collect();
    let mut wrote = Vec::new();
    for w in writers {
        let (n, ok) = w.await.unwrap();
        if ok {
            wrote.push(n);
        }
    }
    let [n] = wrote[..] else {
        panic!("writers that wrote: {wrote:?}")
    };
    assert_eq!(get().await, Some(item("retried", 10 + n)));
}

pub(crate) async fn checkpoints_store(store: Arc<dyn Store>) {
    let cp = |v: u64| StoredCheckpoint {
        agent: "crawler".into(),
        version: v,
        at_ms: 100 * v,
        checksum: format!("sum{v}"),
        data: vec![v as u8; v as usize],
    };
    for v in 1..=4 {
        store.checkpoint_put(cp(v)).await.unwrap();
    }
    // An older version is refused as one a newer has passed, the newest as existing.
    match store.checkpoint_put(cp(2)).await {
        Err(StoreError::Conflict(m)) => assert_eq!(
            m,
            "checkpoint crawler has version 4, newer than the version 2 written"
        ),
        other => panic!("{other:?}"),
    }
    match store.checkpoint_put(cp(4)).await {
        Err(StoreError::Conflict(m)) => {
            assert_eq!(m, "checkpoint crawler version 4 exists already")
        }
        other => panic!("{other:?}"),
    }
    let versions = store.checkpoint_versions("crawler").await.unwrap();
    assert_eq!(
        versions.iter().map(|m| m.version).collect::<Vec<_>>(),
        [4, 3, 2, 1]
    );
    assert_eq!((versions[0].len, versions[0].at_ms), (4, 400));
    assert_eq!(
        store.checkpoint_get("crawler", 3).await.unwrap().unwrap(),
        cp(3)
    );
    assert!(store.checkpoint_get("crawler", 9).await.unwrap().is_none());
    assert!(
        store
            .checkpoint_versions("nobody")
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(store.checkpoint_prune("crawler", 2).await.unwrap(), 2);
    assert_eq!(store.checkpoint_prune("crawler", 2).await.unwrap(), 0);
    let versions = store.checkpoint_versions("crawler").await.unwrap();
    assert_eq!(
        versions.iter().map(|m| m.version).collect::<Vec<_>>(),
        [4, 3]
    );
    assert_eq!(store.checkpoint_prune("nobody", 1).await.unwrap(), 0);
}

/// A lease, a timestamp or a version beyond what the databases' signed 64-bit integers hold
/// (an absurd lease: `Duration::MAX` from a config file) is stored as the largest they hold,
/// not wrapped to a negative number: the claim does not count as expired, so no other process
/// takes the workflow at once, and what is read back is no smaller than what was written.
pub(crate) async fn times_beyond_the_stores_range_saturate(store: Arc<dyn Store>) {
    let far = i64::MAX as u64;
    let mut a = entry("far", 0, "w1", "running");
    a.lease_until_ms = u64::MAX;
    store.append(a).await.unwrap();
    let rec = store.workflow("far").await.unwrap().unwrap();
    assert!(rec.lease_until_ms >= far, "{}", rec.lease_until_ms);
    // A renewal to the end of time, of a claim that ends at 10 000.
    store
        .append(entry("near", 0, "w1", "running"))
        .await
        .unwrap();
    store.renew("near", "w1", u64::MAX).await.unwrap();
    let rec = store.workflow("near").await.unwrap().unwrap();
    assert!(rec.lease_until_ms >= far, "{}", rec.lease_until_ms);
    let claim = |owner: &str, now: u64| Claim::new("saga", &["running"], owner, now, now + 1, 10);
    assert!(
        store.claim(claim("w2", 20_000)).await.unwrap().is_empty(),
        "another process took a workflow whose claim had not expired"
    );
    // A claim to the end of time, too.
    store
        .append(entry("free", 0, "w1", "running").with_release(true))
        .await
        .unwrap();
    let mut c = claim("w3", 20_000);
    c.lease_until_ms = u64::MAX;
    assert_eq!(store.claim(c).await.unwrap(), ["free"]);
    assert!(store.claim(claim("w4", 30_000)).await.unwrap().is_empty());
    // An entry written at the end of time reads back no earlier.
    let mut late = entry("far", 1, "w1", "running");
    late.at_ms = u64::MAX;
    store.append(late).await.unwrap();
    assert!(store.journal("far").await.unwrap()[1].at_ms >= far);
    assert!(store.workflow("far").await.unwrap().unwrap().updated_ms >= far);
}

/// A state nested deeper than [`MAX_DEPTH`](palisade_durable::journal::MAX_DEPTH) would be
/// saved and then fail every load: it is refused at save, and nothing is written; one as
/// deep as that is saved and loaded back.
pub(crate) async fn deep_checkpoint_state_is_refused_at_save(store: Arc<dyn Store>) {
    use palisade_durable::checkpoint::Checkpoints;
    use palisade_durable::error::CheckpointError;
    use palisade_durable::journal::MAX_DEPTH;
    let nested = |depth: usize| (0..depth).fold(json!("leaf"), |v, _| json!([v]));
    let cps = Checkpoints::new(store.clone());
    for depth in [MAX_DEPTH + 1, 127, 200] {
        let r = cps.save("deep", &nested(depth)).await;
        assert!(
            matches!(r, Err(CheckpointError::InvalidState { ref agent, .. }) if agent == "deep"),
            "{depth}: {r:?}"
        );
    }
    assert!(
        cps.versions("deep").await.unwrap().is_empty(),
        "nothing written"
    );
    let meta = cps.save("deep", &nested(MAX_DEPTH)).await.unwrap();
    assert_eq!(meta.version, 1);
    let loaded = cps.load_latest::<serde_json::Value>("deep").await.unwrap();
    assert_eq!(loaded.state, nested(MAX_DEPTH));
    let err = cps.save("deep", &nested(200)).await.unwrap_err();
    assert!(err.to_string().contains("deeper than 100 levels"), "{err}");
}

/// Saves of one agent at once (clones of one `Checkpoints`, each in a task of its own) all
/// succeed, with versions 1 to n between them and each state in one of them; with
/// `keep_last`, the newest are what is kept.
pub(crate) async fn concurrent_checkpoint_saves_take_consecutive_versions(store: Arc<dyn Store>) {
    use palisade_durable::checkpoint::Checkpoints;
    const N: u64 = 8;
    async fn saves(cps: &Checkpoints, states: std::ops::Range<u64>) -> Vec<u64> {
        let tasks: Vec<_> = states
            .map(|state| {
                let cps = cps.clone();
                tokio::spawn(async move { cps.save("conc", &state).await })
            })
            .collect();
        let mut versions = Vec::new();
        for t in tasks {
            versions.push(t.await.unwrap().unwrap().version);
        }
        versions.sort_unstable();
        versions
    }
    let cps = Checkpoints::new(store.clone());
    assert_eq!(saves(&cps, 0..N).await, (1..=N).collect::<Vec<_>>());
    let mut states = Vec::new();
    for v in 1..=N {
        states.push(cps.load_version::<u64>("conc", v).await.unwrap().state);
    }
    states.sort_unstable();
    assert_eq!(states, (0..N).collect::<Vec<_>>());

    let kept = cps.clone().keep_last(3).unwrap();
    assert_eq!(
        saves(&kept, N..2 * N).await,
        (N + 1..=2 * N).collect::<Vec<_>>()
    );
    let versions: Vec<u64> = cps
        .versions("conc")
        .await
        .unwrap()
        .iter()
        .map(|m| m.version)
        .collect();
    assert_eq!(versions, [2 * N, 2 * N - 1, 2 * N - 2]);
    let latest = cps.load_latest::<u64>("conc").await.unwrap();
    assert_eq!(latest.version, 2 * N);
}

/// Saves of the next version (`Checkpoints::save`) and writes of an exact version (a
/// lifecycle's fenced write) of one agent at once: every save succeeds with a version of its
/// own, an exact write either lands or finds its version taken (`Conflict`), never another
/// error. (PostgreSQL: exact writes take the agent's advisory lock too; without it one landing
/// between a save's read of the newest and its insert failed the save with a unique
/// violation reported as a backend error.)
pub(crate) async fn checkpoint_saves_and_exact_writes_at_once(store: Arc<dyn Store>) {
    use palisade_durable::checkpoint::Checkpoints;
    use palisade_durable::store::StoredCheckpoint;
    const N: u64 = 12;
    let cps = Checkpoints::new(store.clone());
    let mut saves = Vec::new();
    let mut exact = Vec::new();
    for i in 0..N {
        let cps = cps.clone();
        saves.push(tokio::spawn(async move { cps.save("mixed", &i).await }));
        let store = store.clone();
        exact.push(tokio::spawn(async move {
            let version = i + 1;
            let data = serde_json::to_vec(&(100 + i)).unwrap();
            let cp = StoredCheckpoint {
                agent: "mixed".into(),
                version,
                at_ms: 1,
                checksum: palisade_durable::checkpoint::checksum(&data),
                data,
            };
            (version, store.checkpoint_put(cp).await)
        }));
    }
    let mut taken = Vec::new();
    for t in saves {
        let saved = t.await.unwrap();
        taken.push(
            saved
                .expect("a save never fails for a version another took")
                .version,
        );
    }
    for t in exact {
        match t.await.unwrap() {
            (version, Ok(())) => taken.push(version),
            (_, Err(StoreError::Conflict(_))) => {}
            (version, Err(e)) => panic!("exact write of version {version}: {e:?}"),
        }
    }
    taken.sort_unstable();
    let stored: Vec<u64> = store
        .checkpoint_versions("mixed")
        .await
        .unwrap()
        .iter()
        .map(|m| m.version)
        .rev()
        .collect();
    assert_eq!(taken, stored, "each version written once, by one writer");
}

/// A checkpoint version at the end of what the store holds (written by hand) has no next: a
/// save is a conflict, not an overflow or a wrapped version, and nothing is written.
pub(crate) async fn no_checkpoint_version_after_the_last(store: Arc<dyn Store>) {
    use palisade_durable::checkpoint::Checkpoints;
    use palisade_durable::error::CheckpointError;
    let last = StoredCheckpoint {
        agent: "end".into(),
        version: u64::MAX,
        at_ms: 1,
        checksum: "c".into(),
        data: vec![1],
    };
    store.checkpoint_put(last).await.unwrap();
    let err = Checkpoints::new(store.clone())
        .save("end", &2)
        .await
        .unwrap_err();
    assert!(
        matches!(err, CheckpointError::Store(StoreError::Conflict(_))),
        "{err:?}"
    );
    assert!(
        err.to_string().contains("is the last the store can hold"),
        "{err}"
    );
    assert_eq!(store.checkpoint_versions("end").await.unwrap().len(), 1);
}
