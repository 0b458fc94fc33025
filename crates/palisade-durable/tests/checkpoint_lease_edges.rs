//! Edges of checkpoints and leases: floats read back bit for bit, a load racing a pruning
//! save, a state JSON cannot hold, and a lease holder that cannot reach the store.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use palisade_core::BoxError;
use palisade_durable::checkpoint::Checkpoints;
use palisade_durable::error::{CheckpointError, SagaError};
use palisade_durable::saga::{CompensationRequest, StepRequest};
use palisade_durable::store::{CheckpointMeta, MemoryStore, Store};
use palisade_durable::{SagaDefinition, SagaState, Sagas, Step};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio::sync::Semaphore;
use tokio::time::Instant;
use tower::service_fn;

mod common;
use common::Edgy;

// ---- Floats ---------------------------------------------------------------------------------

/// Floats that `serde_json` without `float_roundtrip` reads back as a neighbour: 12352/7, and
/// a spread of ordinary and extreme ones (a seeded xorshift).
fn awkward_floats() -> Vec<f64> {
    let mut floats = vec![12352.0 / 7.0, 0.1 + 0.2, 1.0 / 3.0, 5e-324, f64::MAX, -0.0];
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    while floats.len() < 2_000 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let f = match floats.len() % 3 {
            0 => f64::from_bits(x),
            1 => (x >> 11) as f64 / (1u64 << 53) as f64 * 1000.0,
            _ => (x % 100_000) as f64 / 7.0,
        };
        if f.is_finite() {
            floats.push(f);
        }
    }
    floats
}

fn bits(floats: &[f64]) -> Vec<u64> {
    floats.iter().map(|f| f.to_bits()).collect()
}

/// A step's output and a checkpoint, both of awkward floats, read back from `store`.
async fn floats_round_trip(store: Arc<dyn Store>, which: &str) {
    let floats = awkward_floats();
    let price = 12352.0_f64 / 7.0; // 1764.5714285714287
    let output = json!({ "price": price, "all": floats });
    let returned = output.clone();
    let quote = Step::new(
        "quote",
        service_fn(move |_: StepRequest| {
            let out = returned.clone();
            async move { Ok::<_, BoxError>(out) }
        }),
    );
    let sagas = Sagas::builder(store.clone())
        .define(SagaDefinition::new("order", vec![quote]).unwrap())
        .build()
        .unwrap();
    sagas.run("order", "o1", json!(price)).await.unwrap();
    let journaled = sagas.inspect("o1").await.unwrap();
    assert_eq!(journaled.input, json!(price), "{which}: the saga's input");
    let read = journaled.steps[0].output.as_ref().unwrap();
    assert_eq!(
        read["price"].as_f64(),
        Some(price),
        "{which}: the step's output"
    );
    let read_all: Vec<f64> = serde_json::from_value(read["all"].clone()).unwrap();
    assert_eq!(bits(&read_all), bits(&floats), "{which}: the step's output");

    let cps = Checkpoints::new(store);
    cps.save("agent", &price).await.unwrap();
    let loaded = cps.load_latest::<f64>("agent").await.unwrap().state;
    assert_eq!(loaded.to_bits(), price.to_bits(), "{which}: a checkpoint");
    cps.save("agent", &floats).await.unwrap();
    let loaded = cps.load_latest::<Vec<f64>>("agent").await.unwrap().state;
    assert_eq!(bits(&loaded), bits(&floats), "{which}: a checkpoint");
}

#[tokio::test]
async fn floats_are_read_back_bit_for_bit_from_the_memory_store() {
    floats_round_trip(Arc::new(MemoryStore::new()), "memory").await;
}

#[cfg(feature = "sqlite")]
#[tokio::test]
async fn floats_are_read_back_bit_for_bit_from_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let store = palisade_durable::store::SqliteStore::open(dir.path().join("j.db")).unwrap();
    floats_round_trip(Arc::new(store), "sqlite").await;
}

/// With `TEST_PALISADE_PG_URL` (scripts/pg.sh); skipped without it, unless `CI` is set.
#[cfg(feature = "postgres")]
#[tokio::test]
async fn floats_are_read_back_bit_for_bit_from_postgres() {
    let Ok(url) = std::env::var("TEST_PALISADE_PG_URL") else {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI is set but TEST_PALISADE_PG_URL is not: run the PostgreSQL tests under scripts/pg.sh"
        );
        eprintln!("skipping: TEST_PALISADE_PG_URL is not set (run under scripts/pg.sh)");
        return;
    };
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    let schema = format!("t_floats_{}_{nanos}", std::process::id());
    let store = palisade_durable::store::PostgresStore::connect_with(&url, Some(&schema), 2)
        .await
        .unwrap();
    floats_round_trip(store, "postgres").await;
}

// ---- load_latest racing a pruning save --------------------------------------------------------

/// After each listing, another process saves the next version with `keep_last(1)`, pruning the
/// one just listed, `times` times.
fn prune_after_listing(store: &Edgy, times: u32) {
    let left = Arc::new(AtomicU32::new(times));
    *store.after_versions.lock().unwrap() = Some(Box::new(move |inner: MemoryStore| {
        let left = left.clone();
        Box::pin(async move {
            if left
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                .is_err()
            {
                return;
            }
            let other = Checkpoints::new(Arc::new(inner.clone()))
                .keep_last(1)
                .unwrap();
            let newest = inner.checkpoint_versions("crawler").await.unwrap()[0].version;
            other.save("crawler", &(newest + 1)).await.unwrap();
        })
    }));
}

#[tokio::test]
async fn load_latest_lists_again_when_a_concurrent_save_pruned_what_it_listed() {
    let store = Arc::new(Edgy::default());
    let cps = Checkpoints::new(store.clone()).keep_last(1).unwrap();
    cps.save("crawler", &1u64).await.unwrap();
    // Twice in a row: the version listed first and the one listed next are both pruned.
    prune_after_listing(&store, 2);
    let loaded = cps.load_latest::<u64>("crawler").await.unwrap();
    assert_eq!((loaded.version, loaded.state), (3, 3));
    assert!(loaded.corrupt.is_empty());
    assert_eq!(store.listings.load(Ordering::SeqCst), 3);
    // The bytes, the same.
    prune_after_listing(&store, 1);
    let loaded = cps.load_latest_bytes("crawler").await.unwrap();
    assert_eq!((loaded.version, loaded.state), (4, b"4".to_vec()));
}

#[tokio::test]
async fn load_latest_gives_up_after_a_few_listings_all_pruned() {
    let store = Arc::new(Edgy::default());
    let cps = Checkpoints::new(store.clone()).keep_last(1).unwrap();
    cps.save("crawler", &1u64).await.unwrap();
    prune_after_listing(&store, u32::MAX);
    let loaded = cps.load_latest::<u64>("crawler").await;
    assert!(
        matches!(loaded, Err(CheckpointError::NotFound { version: None, .. })),
        "{loaded:?}"
    );
    let listings = store.listings.load(Ordering::SeqCst);
    assert!((2..=8).contains(&listings), "{listings} listings");
}

#[tokio::test]
async fn load_latest_of_an_agent_without_checkpoints_lists_once() {
    let store = Arc::new(Edgy::default());
    let cps = Checkpoints::new(store.clone());
    assert!(matches!(
        cps.load_latest::<u64>("nobody").await,
        Err(CheckpointError::NotFound { version: None, .. })
    ));
    assert_eq!(store.listings.load(Ordering::SeqCst), 1);
}

// ---- States JSON cannot hold ----------------------------------------------------------------

#[derive(Serialize, Deserialize, Debug, PartialEq)]
struct Agent {
    page: u32,
    score: f64,
    note: Option<String>,
}

#[derive(Serialize)]
enum Mood {
    Calm { level: f32 },
    Pair(f64, f64),
    Just(f64),
}

fn refused(result: Result<CheckpointMeta, CheckpointError>, naming: &str) {
    match result {
        Err(CheckpointError::InvalidState { agent, reason }) => {
            assert_eq!(agent, "crawler");
            assert!(
                reason.contains(naming),
                "{reason:?} does not name {naming:?}"
            );
        }
        other => panic!("expected InvalidState naming {naming:?}, got {other:?}"),
    }
}

#[tokio::test]
async fn a_state_with_a_nan_or_infinite_float_is_refused_and_nothing_is_written() {
    let cps = Checkpoints::new(Arc::new(MemoryStore::new()));
    let good = Agent {
        page: 1,
        score: 0.5,
        note: None,
    };
    cps.save("crawler", &good).await.unwrap();
    let nan = Agent {
        page: 2,
        score: f64::NAN,
        note: Some("null".into()),
    };
    refused(cps.save("crawler", &nan).await, "state.score is NaN");
    refused(
        cps.save("crawler", &vec![1.0, f64::INFINITY]).await,
        "state[1] is inf",
    );
    let map = BTreeMap::from([("a", 1.0), ("b", f64::NEG_INFINITY)]);
    refused(cps.save("crawler", &map).await, r#"state["b"] is -inf"#);
    refused(cps.save("crawler", &Some(f64::NAN)).await, "state is NaN");
    refused(cps.save("crawler", &f32::NAN).await, "state is NaN");
    refused(
        cps.save(
            "crawler",
            &Mood::Calm {
                level: f32::INFINITY,
            },
        )
        .await,
        "state.Calm.level is inf",
    );
    refused(
        cps.save("crawler", &Mood::Pair(0.0, f64::NAN)).await,
        "state.Pair[1] is NaN",
    );
    refused(
        cps.save("crawler", &[(1u8, Mood::Just(f64::NAN))]).await,
        "state[0][1].Just is NaN",
    );
    // Nothing was written: the good version is the latest and loads.
    assert_eq!(cps.versions("crawler").await.unwrap().len(), 1);
    let loaded = cps.load_latest::<Agent>("crawler").await.unwrap();
    assert_eq!((loaded.version, loaded.state), (1, good));

    // Nulls that are not floats, and large finite floats, are saved as before.
    let fine = Agent {
        page: 3,
        score: f64::MAX,
        note: None,
    };
    assert_eq!(cps.save("crawler", &fine).await.unwrap().version, 2);
    assert_eq!(
        cps.load_latest::<Agent>("crawler").await.unwrap().state,
        fine
    );
    let value = json!({ "x": null, "y": [null, 1.5] });
    assert_eq!(cps.save("crawler", &value).await.unwrap().version, 3);
    assert_eq!(
        cps.load_latest::<Value>("crawler").await.unwrap().state,
        value
    );
    assert_eq!(
        cps.save("crawler", &Some(f64::NAN).filter(|f| !f.is_nan()))
            .await
            .unwrap()
            .version,
        4
    );
}

// ---- A lease holder that cannot reach the store -----------------------------------------------

const LEASE: Duration = Duration::from_secs(10);

/// A one-step saga whose step records `book` once `gate` (if any) lets it through, and whose
/// compensation records `undo book`.
fn trip(effects: &Arc<Mutex<Vec<&'static str>>>, gate: Option<Arc<Semaphore>>) -> SagaDefinition {
    let (e1, e2) = (effects.clone(), effects.clone());
    let book = Step::new(
        "book",
        service_fn(move |_: StepRequest| {
            let (e, g) = (e1.clone(), gate.clone());
            async move {
                if let Some(g) = g {
                    let _p = g.acquire().await.unwrap();
                }
                e.lock().unwrap().push("book");
                Ok::<_, BoxError>(json!(1))
            }
        }),
    )
    .compensate(service_fn(move |_: CompensationRequest| {
        e2.lock().unwrap().push("undo book");
        async { Ok::<(), BoxError>(()) }
    }));
    SagaDefinition::new("trip", vec![book]).unwrap()
}

fn engine(store: Arc<dyn Store>, owner: &str, def: SagaDefinition) -> Sagas {
    Sagas::builder(store)
        .owner(owner)
        .lease(LEASE)
        .define(def)
        .build()
        .unwrap()
}

#[tokio::test(start_paused = true)]
async fn a_holder_that_cannot_renew_drops_its_step_before_its_lease_runs_out() {
    let effects = Arc::new(Mutex::new(Vec::new()));
    let gate = Arc::new(Semaphore::new(0));
    let store = Arc::new(Edgy::default());
    let a = engine(store.clone(), "a", trip(&effects, Some(gate.clone())));
    let b = engine(Arc::new(store.inner.clone()), "b", trip(&effects, None));
    // a's heartbeats cannot reach the store (its journal entries can, before the step).
    store.partitioned.store(true, Ordering::SeqCst);
    let t0 = Instant::now();
    let (ra, rb) = tokio::join!(
        async {
            let r = a.run("trip", "t1", json!({})).await;
            (r, t0.elapsed())
        },
        async {
            tokio::time::sleep(LEASE + Duration::from_secs(1)).await;
            let r = b.recover().await.unwrap();
            gate.add_permits(1); // a's slow call to the booking service would return now
            r
        }
    );
    let (ra, gave_up) = ra;
    assert!(
        matches!(&ra, Err(SagaError::LeaseLost(id)) if id == "t1"),
        "{ra:?}"
    );
    // Not before its two renewals had a chance (at a third of the lease, then a twelfth
    // later), and by half the lease, before another engine may take the saga over.
    assert!(
        gave_up >= LEASE * 5 / 12 && gave_up <= LEASE / 2,
        "a gave up after {gave_up:?}"
    );
    assert_eq!(store.renewals.load(Ordering::SeqCst), 2);
    assert_eq!(rb.resumed.len(), 1);
    assert_eq!(rb.resumed[0].state, SagaState::Compensated);
    tokio::task::yield_now().await;
    assert_eq!(*effects.lock().unwrap(), ["undo book"]);
}

/// The journal entry that secures the claim before the step is acknowledged late (after 4 s
/// of a 10 s lease): the lease runs from when it was sent, and so does the heartbeat's
/// deadline. A holder that cannot renew drops its step before the lease it relied on runs out,
/// not half a lease after the slow write returned.
#[tokio::test(start_paused = true)]
async fn a_slow_journal_write_does_not_stretch_the_deadline() {
    let effects = Arc::new(Mutex::new(Vec::new()));
    let gate = Arc::new(Semaphore::new(0));
    let store = Arc::new(Edgy::default());
    let a = engine(store.clone(), "a", trip(&effects, Some(gate)));
    store.partitioned.store(true, Ordering::SeqCst);
    // Every entry is acknowledged 4 s after it was written: the saga's start (sent at 0 s,
    // back at 4 s), then the step's start (sent at 4 s, back at 8 s).
    store.slow_appends_ms.store(4_000, Ordering::SeqCst);
    let t0 = Instant::now();
    let ra = a.run("trip", "t1", json!({})).await;
    let gave_up = t0.elapsed();
    assert!(
        matches!(&ra, Err(SagaError::LeaseLost(id)) if id == "t1"),
        "{ra:?}"
    );
    // Half the lease after the step's entry was sent (at 4 s), not after it was acknowledged
    // (at 8 s).
    let sent = Duration::from_secs(4);
    assert!(
        gave_up >= sent + LEASE * 5 / 12 && gave_up <= sent + LEASE / 2,
        "a gave up after {gave_up:?}"
    );
    assert!(effects.lock().unwrap().is_empty());
}

#[tokio::test(start_paused = true)]
async fn a_failed_renewal_followed_by_one_that_works_keeps_the_step() {
    let effects = Arc::new(Mutex::new(Vec::new()));
    let gate = Arc::new(Semaphore::new(0));
    let store = Arc::new(Edgy::default());
    let a = engine(store.clone(), "a", trip(&effects, Some(gate.clone())));
    let b = engine(Arc::new(store.inner.clone()), "b", trip(&effects, None));
    // The first renewal fails; the second secures the claim for another lease from when it
    // was sent, and so on: the step outlasts three leases.
    store.fail_renewals.store(1, Ordering::SeqCst);
    let (ra, resumed) = tokio::join!(a.run("trip", "t2", json!({})), async {
        let mut resumed = 0;
        for _ in 0..12 {
            tokio::time::sleep(LEASE / 4).await;
            resumed += b.recover().await.unwrap().resumed.len();
        }
        gate.add_permits(1);
        resumed
    });
    assert_eq!(resumed, 0, "b took the saga over");
    assert_eq!(ra.unwrap().state, SagaState::Completed);
    assert_eq!(*effects.lock().unwrap(), ["book"]);
    assert!(store.renewals.load(Ordering::SeqCst) >= 8);
}

#[tokio::test(start_paused = true)]
async fn a_compensation_that_cannot_renew_is_dropped_too() {
    let undone = Arc::new(AtomicU32::new(0));
    let gate = Arc::new(Semaphore::new(0));
    let def = |gate: Option<Arc<Semaphore>>| {
        let undone = undone.clone();
        let book = Step::new(
            "book",
            service_fn(|_: StepRequest| async { Ok::<_, BoxError>(json!(1)) }),
        )
        .compensate(service_fn(move |_: CompensationRequest| {
            let (undone, gate) = (undone.clone(), gate.clone());
            async move {
                if let Some(g) = gate {
                    let _p = g.acquire().await.unwrap();
                }
                undone.fetch_add(1, Ordering::SeqCst);
                Ok::<(), BoxError>(())
            }
        }));
        let fail = Step::new(
            "pay",
            service_fn(|_: StepRequest| async { Err::<Value, BoxError>("HTTP 402".into()) }),
        );
        SagaDefinition::new("trip", vec![book, fail]).unwrap()
    };
    let store = Arc::new(Edgy::default());
    let a = engine(store.clone(), "a", def(Some(gate.clone())));
    let b = engine(Arc::new(store.inner.clone()), "b", def(None));
    store.partitioned.store(true, Ordering::SeqCst);
    let (ra, rb) = tokio::join!(a.run("trip", "t3", json!({})), async {
        tokio::time::sleep(LEASE + Duration::from_secs(1)).await;
        let r = b.recover().await.unwrap();
        gate.add_permits(1);
        r
    });
    assert!(matches!(&ra, Err(SagaError::LeaseLost(_))), "{ra:?}");
    assert_eq!(rb.resumed[0].state, SagaState::Compensated);
    tokio::task::yield_now().await;
    // Only b's compensation ran; a's was dropped while it waited.
    assert_eq!(undone.load(Ordering::SeqCst), 1);
}
