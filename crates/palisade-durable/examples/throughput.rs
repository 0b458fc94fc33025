//! Journal throughput: appends per second and sagas per second on each store.
//!
//! ```text
//! cargo run --release -p palisade-durable --example throughput
//! scripts/pg.sh cargo run --release -p palisade-durable --features postgres --example throughput
//! ```
//!
//! Appends: one writer appending to its own workflows, then 8 concurrent writers. Sagas: a
//! saga of 3 no-op steps (8 journal entries each), 8 running at once. SQLite is measured
//! with `synchronous = FULL` (durable across power cuts, the default) and `NORMAL` (durable
//! across process crashes).

// A throughput measurement reads the real clock.
#![allow(clippy::disallowed_methods)]

use std::sync::Arc;
use std::time::Instant;

use palisade_core::BoxError;
use palisade_durable::saga::StepRequest;
use palisade_durable::store::{Append, SqliteOptions, SqliteStore, Store};
use palisade_durable::{SagaDefinition, SagaState, Sagas, Step};
use serde_json::json;
use tower::service_fn;

const APPENDS: usize = 2_000;
const SAGAS: usize = 400;
const CONCURRENCY: usize = 8;

async fn appends(store: &Arc<dyn Store>, tag: &str, writers: usize) -> f64 {
    let per_writer = APPENDS / writers;
    let start = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for w in 0..writers {
        let store = store.clone();
        let tag = tag.to_owned();
        tasks.spawn(async move {
            for i in 0..per_writer {
                // 10 entries per workflow.
                let id = format!("{tag}-w{w}-{}", i / 10);
                let event = json!({"type": "bench", "i": i});
                store
                    .append(Append::new(
                        id,
                        "bench",
                        "bench",
                        (i % 10) as u64,
                        0,
                        event,
                        "running",
                        format!("w{w}"),
                        u64::MAX / 2,
                    ))
                    .await
                    .unwrap();
            }
        });
    }
    while let Some(t) = tasks.join_next().await {
        t.unwrap();
    }
    (per_writer * writers) as f64 / start.elapsed().as_secs_f64()
}

async fn sagas(store: &Arc<dyn Store>, tag: &str) -> f64 {
    let step = |name: &'static str| {
        Step::new(
            name,
            service_fn(|r: StepRequest| async move { Ok::<_, BoxError>(json!(r.step)) }),
        )
    };
    let engine = Sagas::builder(store.clone())
        .owner(format!("bench-{tag}"))
        .define(SagaDefinition::new("bench", vec![step("a"), step("b"), step("c")]).unwrap())
        .build()
        .unwrap();
    let start = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for lane in 0..CONCURRENCY {
        let engine = engine.clone();
        let tag = tag.to_owned();
        tasks.spawn(async move {
            for k in (lane..SAGAS).step_by(CONCURRENCY) {
                let info = engine
                    .run("bench", &format!("{tag}-s{k}"), json!(k))
                    .await
                    .unwrap();
                assert_eq!(info.state, SagaState::Completed);
            }
        });
    }
    while let Some(t) = tasks.join_next().await {
        t.unwrap();
    }
    SAGAS as f64 / start.elapsed().as_secs_f64()
}

async fn measure(name: &str, store: Arc<dyn Store>, tag: &str) {
    let one = appends(&store, &format!("{tag}-a1"), 1).await;
    let many = appends(&store, &format!("{tag}-a8"), CONCURRENCY).await;
    let s = sagas(&store, tag).await;
    println!("| {name:<34} | {one:>10.0} | {many:>12.0} | {s:>8.0} |");
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<(), BoxError> {
    let dir = tempfile::tempdir()?;
    println!(
        "| store | appends/s, 1 writer | appends/s, {CONCURRENCY} writers | sagas/s ({CONCURRENCY} at once, 3 steps) |"
    );
    println!("|---|---:|---:|---:|");
    let full = SqliteStore::open(dir.path().join("full.db"))?;
    measure("SQLite, synchronous=FULL (default)", Arc::new(full), "full").await;
    let normal = SqliteStore::open_with(
        dir.path().join("normal.db"),
        SqliteOptions::default().durable(false),
    )?;
    measure("SQLite, synchronous=NORMAL", Arc::new(normal), "normal").await;
    #[cfg(feature = "postgres")]
    if let Ok(url) = std::env::var("TEST_PALISADE_PG_URL") {
        let schema = format!("bench_{}", std::process::id());
        let pg =
            palisade_durable::store::PostgresStore::connect_with(&url, Some(&schema), 8).await?;
        measure("PostgreSQL (8 connections)", pg, "pg").await;
    }
    Ok(())
}
