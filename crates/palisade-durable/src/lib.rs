//! Durable agent workflows for tower services: sagas with compensation on a write-ahead
//! journal, a review queue for what needs a person, and checkpoints of agent state.
//!
//! A multi-step agent pipeline (crawl, classify, report, mail) cannot be made atomic: each
//! step talks to another system. A **saga** runs the steps in order and, when one fails, runs
//! the *compensations* of the steps already done, newest first. [`Sagas`] does this on a
//! journal: every transition is written to the [store] before it is acted on, so a
//! process killed at any instant resumes on restart ([`Sagas::recover`]) without running a
//! completed step again and compensating each completed step exactly once. Compensations that
//! keep failing are escalated to the [`ReviewQueue`], never dropped.
//!
//! Each step is a tower [`Service`](tower::Service): put palisade's retry, timeout and breaker
//! layers around it as around any other call.
//!
//! # Example
//!
//! ```
//! use std::sync::Arc;
//! use palisade_core::BoxError;
//! use palisade_durable::saga::{CompensationRequest, StepRequest};
//! use palisade_durable::store::{MemoryStore, Store};
//! use palisade_durable::{SagaDefinition, SagaState, Sagas, Step};
//! use serde_json::{json, Value};
//! use tower::service_fn;
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)]
//! # async fn main() {
//! let book = Step::new("book", service_fn(|req: StepRequest| async move {
//!     // `req.idempotency_key` ("trip-1/0") lets the tool recognise a repeat.
//!     Ok::<_, BoxError>(json!({ "booking": format!("B-{}", req.idempotency_key) }))
//! }))
//! .compensate(service_fn(|req: CompensationRequest| async move {
//!     println!("cancelling {}", req.output.unwrap_or(Value::Null)["booking"]);
//!     Ok::<_, BoxError>(())
//! }));
//! let pay = Step::new("pay", service_fn(|_req: StepRequest| async {
//!     Err::<Value, BoxError>("402 payment required: card declined".into())
//! }));
//!
//! let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
//! let sagas = Sagas::builder(store)
//!     .define(SagaDefinition::new("trip", vec![book, pay]).unwrap())
//!     .build()
//!     .unwrap();
//!
//! let trip = sagas.run("trip", "trip-1", json!({ "to": "Lisbon" })).await.unwrap();
//! assert_eq!(trip.state, SagaState::Compensated);
//! assert!(trip.steps[1].error.as_ref().unwrap().message.contains("card declined"));
//!
//! // On restart, resume whatever was interrupted (nothing, here).
//! assert!(sagas.recover().await.unwrap().resumed.is_empty());
//! # }
//! ```
//!
//! A completed step with no compensation is kept as it is when a later step fails: the
//! steps with compensations are undone, and the saga still ends
//! [`Compensated`](SagaState::Compensated). Discarding a review item (`review discard`)
//! abandons the saga where it stands: the escalated compensation and those of the earlier
//! steps still waiting behind it are not run. A step or a compensation that panics
//! propagates the panic out of [`Sagas::run`] and [`Sagas::recover`], as a crash would (the
//! journal says where it stopped): spawn them (`tokio::spawn`) to keep the caller alive.
//!
//! # Checkpoints
//!
//! [`Checkpoints`](checkpoint::Checkpoints) save an agent's state as numbered versions with a
//! SHA-256 checksum, load the newest good one (reporting, never returning, corrupt ones) and
//! keep the last N; [`Lifecycle`](lifecycle::Lifecycle) checkpoints each transition of an
//! agent (initialized → waiting → processing → completed | failed) and refuses invalid ones.
//!
//! # Two-phase commit
//!
//! For all-or-nothing work across participants that can hold a prepared state (databases,
//! ledgers), [`twopc::Coordinator`] runs a two-phase commit on the same journal: the decision
//! is journaled before it is sent, and a restart presumes abort (or delivers what a person
//! decided with [`twopc::Transactions::resolve`]). Its module docs say when a
//! saga is the better tool (participants that cannot hold a prepared state, such as LLM
//! calls).
//!
//! # Housekeeping
//!
//! Finished sagas and transactions stay in the store, journal and review items and all,
//! until [`Sagas::purge_finished`] (or [`twopc::Coordinator::purge_finished`]) deletes those
//! older than an age you choose, with their journals and review items, in one store
//! transaction; call it from time to time (on a SQLite store, the command-line tool does
//! both: `palisade-durable --db journal.db purge --older-than 30d`). The review items of a
//! saga still escalated stay with it, however old. During a
//! rolling deploy, a process that cannot resume a saga (its definition is not in that version
//! of the binary) gives the claim back at once, so a process that can takes it on its next
//! recovery (see *Rolling deploys* on [`Sagas::recover`]).
//!
//! # Stores
//!
//! | store | use |
//! |---|---|
//! | [`MemoryStore`](store::MemoryStore) | tests |
//! | [`SqliteStore`](store::SqliteStore) (feature `sqlite`, default) | the embedded default: one file on local disk, no server |
//! | `PostgresStore` (feature `postgres`) | several processes on several machines sharing one journal; claims with `FOR UPDATE SKIP LOCKED` |
//!
//! The same behavioural test suite runs against all three (PostgreSQL when `TEST_PALISADE_PG_URL`
//! names a database; `scripts/pg.sh` starts a throwaway one).
//!
//! # Throughput
//!
//! `cargo run --release -p palisade-durable --example throughput` (add
//! `--features postgres` under `scripts/pg.sh` for PostgreSQL) measures journal appends per
//! second (one writer; 8 writers) and sagas per second (3 no-op steps, 8 journal entries
//! each, 8 at once). On the 2-core development machine, with other builds running (so the
//! spread between runs is wide), three runs gave:
//!
//! | store | appends/s, 1 writer | appends/s, 8 writers | sagas/s |
//! |---|---:|---:|---:|
//! | SQLite, `synchronous = FULL` (default) | 2,600–5,600 | 2,900–7,100 | 270–880 |
//! | SQLite, `synchronous = NORMAL` | 14,700–29,200 | 16,800–28,500 | 2,000–3,400 |
//! | PostgreSQL 15, loopback, `fsync` off (`scripts/pg.sh`) | 3,700–4,100 | 3,600–3,900 | 460–490 |
//!
//! Each append is one transaction; with `FULL` it waits for the disk, which is the cost of a
//! journal that survives a power cut.
//!
//! # Errors
//!
//! A step that fails is not an error of [`Sagas::run`]: it returns the saga as it ended
//! ([`SagaInfo::state`]). Errors are the engine's own ([`error::SagaError`]): an unknown
//! definition, a duplicate id, an input nested too deep to journal, an id that is a
//! two-phase-commit transaction's ([`error::SagaError::WrongKind`]), a store failure. Bad
//! configuration is a [`ConfigError`](palisade_core::ConfigError) from the builders, never a
//! panic.
//!
//! # Sagas and time
//!
//! Compensation backoff sleeps on `tokio::time`, and journal timestamps follow tokio's clock
//! ([`wall_clock`](palisade_core::hint::wall_clock)), so tests on the paused clock run
//! instantly and deterministically.

#![cfg_attr(docsrs, feature(doc_cfg))]

pub mod checkpoint;
mod engine;
pub mod error;
pub mod journal;
mod lease;
pub mod lifecycle;
pub mod review;
pub mod saga;
mod settings;
pub mod store;
pub mod twopc;

pub use engine::{Recovery, Sagas, SagasBuilder};
pub use journal::{SagaInfo, SagaState};
pub use review::{ReviewItem, ReviewQueue};
pub use saga::{SagaDefinition, Step};
