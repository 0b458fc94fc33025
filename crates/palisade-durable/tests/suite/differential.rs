//! A differential check: seeded random sequences of claim-level operations (appends with right
//! and wrong sequence numbers and releases, claims, renewals, releases of an instance, review
//! items, purges) run on the store under test and on a `MemoryStore` side by side; every
//! result (ok or conflict, the ids claimed, the count purged) and every workflow record must
//! agree.

use std::sync::Arc;

use palisade_durable::error::StoreError;
use palisade_durable::store::{Append, Claim, MemoryStore, Purge, Store, StoredReview};
use serde_json::json;

/// Seeded choices (rand's ChaCha8: the same sequence for a seed on every platform).
struct Rng(rand_chacha::ChaCha8Rng);
impl Rng {
    fn new(seed: u64) -> Self {
        use rand::SeedableRng;
        Rng(rand_chacha::ChaCha8Rng::seed_from_u64(seed))
    }
    fn pick<'a>(&mut self, of: &[&'a str]) -> &'a str {
        of[self.below(of.len() as u64) as usize]
    }
    fn below(&mut self, n: u64) -> u64 {
        use rand::Rng as _;
        self.0.random_range(0..n)
    }
}

fn outcome<T: std::fmt::Debug>(r: Result<T, StoreError>) -> String {
    match r {
        Ok(v) => format!("ok {v:?}"),
        Err(StoreError::Conflict(_)) => "conflict".into(),
        Err(e) => format!("error {e}"),
    }
}

/// 12 seeds of 250 operations each, compared after every step.
pub(crate) async fn claim_level_operations_agree_with_the_memory_store(store: Arc<dyn Store>) {
    const IDS: &[&str] = &["a", "b", "c", "d"];
    const OWNERS: &[&str] = &["p", "q"];
    const INSTANCES: &[&str] = &["", "i1", "i2"];
    const STATES: &[&str] = &["running", "compensating", "completed", "failed"];
    for seed in 0..12u64 {
        let model: Arc<dyn Store> = Arc::new(MemoryStore::new());
        // A fresh id space per seed on the store under test (it is not emptied between seeds).
        let prefix = format!("s{seed}-");
        let kind = format!("k{seed}");
        let kind = kind.as_str();
        let mut rng = Rng::new(seed);
        let mut now = 1_000u64;
        let mut log: Vec<String> = Vec::new();
        for step in 0..250 {
            now += rng.below(4_000);
            let id = rng.pick(IDS);
            let owner = rng.pick(OWNERS);
            let instance = rng.pick(INSTANCES);
            let lease = now + [0, 500, 5_000, 12_000][rng.below(4) as usize];
            let op = rng.below(9);
            let (desc, got, want) = match op {
                0 | 1 => {
                    // Append the next entry (or a wrong seq, sometimes).
                    let entries = model.workflow(id).await.unwrap().map_or(0, |w| w.entries);
                    let seq = match rng.below(6) {
                        0 => entries + 1,
                        1 => entries.saturating_sub(1),
                        _ => entries,
                    };
                    let state = rng.pick(STATES);
                    let release = rng.below(3) == 0;
                    let mk = |pfx: &str| {
                        Append::new(
                            format!("{pfx}{id}"),
                            kind,
                            "d",
                            seq,
                            now,
                            json!({ "seq": seq }),
                            state,
                            owner,
                            lease,
                        )
                        .with_release(release)
                        .with_instance(instance)
                    };
                    (
                        format!(
                            "append {id} seq {seq} {state} by {owner}/{instance:?} release {release} until {lease}"
                        ),
                        outcome(store.append(mk(&prefix)).await),
                        outcome(model.append(mk("")).await),
                    )
                }
                2 | 3 => {
                    let states: Vec<&str> = if rng.below(2) == 0 {
                        vec!["running", "compensating"]
                    } else {
                        vec!["running"]
                    };
                    let limit = rng.below(4) as usize;
                    let only = (rng.below(3) == 0).then_some(id);
                    let mk = |pfx: &str| {
                        let mut c = Claim::new(kind, &states, owner, now, lease, limit)
                            .with_instance(instance);
                        if let Some(o) = only {
                            c = c.only(format!("{pfx}{o}"));
                        }
                        c
                    };
                    let got = store.claim(mk(&prefix)).await.map(|ids| {
                        ids.into_iter()
                            .map(|i| i.strip_prefix(&prefix).unwrap().to_owned())
                            .collect::<Vec<_>>()
                    });
                    (
                        format!(
                            "claim {states:?} by {owner}/{instance:?} limit {limit} only {only:?} until {lease}"
                        ),
                        outcome(got),
                        outcome(model.claim(mk("")).await),
                    )
                }
                4 => (
                    format!("renew_instance {id} by {owner}/{instance:?} until {lease}"),
                    outcome(
                        store
                            .renew_instance(&format!("{prefix}{id}"), owner, instance, now, lease)
                            .await,
                    ),
                    outcome(model.renew_instance(id, owner, instance, now, lease).await),
                ),
                5 => (
                    format!("renew {id} by {owner} until {lease}"),
                    outcome(store.renew(&format!("{prefix}{id}"), owner, lease).await),
                    outcome(model.renew(id, owner, lease).await),
                ),
                6 => (
                    format!("release_instance {id} by {owner}/{instance:?}"),
                    outcome(
                        store
                            .release_instance(&format!("{prefix}{id}"), owner, instance)
                            .await,
                    ),
                    outcome(model.release_instance(id, owner, instance).await),
                ),
                7 => {
                    // A review item for the workflow, so that purges have some to delete.
                    let mk = |pfx: &str| StoredReview {
                        id: format!("{pfx}{id}/0"),
                        workflow_id: format!("{pfx}{id}"),
                        status: "open".into(),
                        updated_ms: now,
                        body: json!({}),
                    };
                    (
                        format!("review_put {id}/0"),
                        outcome(store.review_put(mk(&prefix)).await),
                        outcome(model.review_put(mk("")).await),
                    )
                }
                _ => {
                    let before = now - rng.below(3_000);
                    let limit = 1 + rng.below(3) as usize;
                    let p = Purge::new(kind, &["completed", "failed"], before, limit);
                    (
                        format!("purge before {before} limit {limit}"),
                        outcome(store.purge(p.clone()).await),
                        outcome(model.purge(p).await),
                    )
                }
            };
            log.push(format!("{step}: {desc} -> {want}"));
            assert_eq!(
                got,
                want,
                "seed {seed} step {step}: {desc}\nhistory:\n{}",
                log.join("\n")
            );
            for id in IDS {
                let got = store
                    .workflow(&format!("{prefix}{id}"))
                    .await
                    .unwrap()
                    .map(|w| (w.state, w.owner, w.lease_until_ms, w.entries, w.updated_ms));
                let want = model
                    .workflow(id)
                    .await
                    .unwrap()
                    .map(|w| (w.state, w.owner, w.lease_until_ms, w.entries, w.updated_ms));
                assert_eq!(
                    got,
                    want,
                    "seed {seed} step {step}: workflow {id} after {desc}\nhistory:\n{}",
                    log.join("\n")
                );
            }
        }
    }
}
