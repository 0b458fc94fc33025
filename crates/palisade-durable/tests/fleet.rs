//! Several processes sharing one journal: each has its own store handle (its own connections)
//! and owner name, and they recover the same backlog at once. Every saga must be resumed by
//! exactly one of them, and every step run exactly once.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use palisade_core::BoxError;
use palisade_durable::saga::StepRequest;
use palisade_durable::store::{Append, MemoryStore, Store};
use palisade_durable::{SagaDefinition, SagaState, Sagas, Step};
use serde_json::json;
use tower::service_fn;

const BACKLOG: usize = 60;

type Calls = Arc<Mutex<HashMap<String, u32>>>;

fn definition(calls: &Calls) -> SagaDefinition {
    let steps = ["a", "b", "c"]
        .into_iter()
        .map(|name| {
            let calls = calls.clone();
            Step::new(
                name,
                service_fn(move |req: StepRequest| {
                    let calls = calls.clone();
                    async move {
                        *calls
                            .lock()
                            .unwrap()
                            .entry(req.idempotency_key.clone())
                            .or_default() += 1;
                        tokio::task::yield_now().await;
                        Ok::<_, BoxError>(json!(req.step))
                    }
                }),
            )
        })
        .collect();
    SagaDefinition::new("t", steps).unwrap()
}

/// Leaves a backlog of sagas started by a process that died, its lease long expired.
async fn backlog(store: &Arc<dyn Store>) {
    for i in 0..BACKLOG {
        let start =
            json!({"type": "saga_started", "name": "t", "steps": ["a", "b", "c"], "input": i});
        store
            .append(Append::new(
                format!("b{i:03}"),
                "saga",
                "t",
                0,
                1,
                start,
                "running",
                "dead",
                2,
            ))
            .await
            .unwrap();
    }
}

async fn three_processes(handles: Vec<Arc<dyn Store>>) {
    backlog(&handles[0]).await;
    let calls = Calls::default();
    let mut tasks = Vec::new();
    for (n, store) in handles.iter().enumerate() {
        let sagas = Sagas::builder(store.clone())
            .owner(format!("w{n}"))
            .define(definition(&calls))
            .build()
            .unwrap();
        tasks.push(tokio::spawn(async move { sagas.recover().await.unwrap() }));
    }
    let mut per_process = Vec::new();
    let mut resumed = HashMap::new();
    for t in tasks {
        let r = t.await.unwrap();
        assert!(r.failed.is_empty(), "{:?}", r.failed);
        per_process.push(r.resumed.len());
        for info in r.resumed {
            assert_eq!(info.state, SagaState::Completed);
            *resumed.entry(info.id).or_insert(0) += 1;
        }
    }
    assert_eq!(resumed.len(), BACKLOG);
    assert!(
        resumed.values().all(|n| *n == 1),
        "a saga was resumed twice"
    );
    let calls = calls.lock().unwrap();
    assert_eq!(calls.len(), BACKLOG * 3);
    assert!(calls.values().all(|n| *n == 1), "a step ran twice");
    println!("sagas resumed per process: {per_process:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory() {
    let store = MemoryStore::new();
    three_processes(
        (0..3)
            .map(|_| Arc::new(store.clone()) as Arc<dyn Store>)
            .collect(),
    )
    .await;
}

#[cfg(feature = "sqlite")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("journal.db");
    let handles = (0..3)
        .map(|_| {
            Arc::new(palisade_durable::store::SqliteStore::open(&path).unwrap()) as Arc<dyn Store>
        })
        .collect();
    three_processes(handles).await;
}

#[cfg(feature = "postgres")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres() {
    let Ok(url) = std::env::var("TEST_PALISADE_PG_URL") else {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI is set but TEST_PALISADE_PG_URL is not: run the PostgreSQL tests under scripts/pg.sh"
        );
        eprintln!(
            "skipping fleet::postgres: TEST_PALISADE_PG_URL is not set (run under scripts/pg.sh)"
        );
        return;
    };
    let schema = format!("fleet_{}", std::process::id());
    let mut handles = Vec::new();
    for _ in 0..3 {
        let store = palisade_durable::store::PostgresStore::connect_with(&url, Some(&schema), 2)
            .await
            .unwrap();
        handles.push(store as Arc<dyn Store>);
    }
    three_processes(handles).await;
}
