//! Durable agent workflows: sagas with compensation on a journal, checkpoints, a review queue.
//!
//! Everything durable goes through one [`Store`](store::Store): in memory for tests
//! ([`MemoryStore`](store::MemoryStore)), SQLite on local disk as the embedded default
//! ([`SqliteStore`](store::SqliteStore)), PostgreSQL for fleets (feature `postgres`).
//!
//! # Example
//!
//! ```
//! use palisade_durable::store::{Append, MemoryStore, Store};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let store = MemoryStore::new();
//! let entry = Append::new("order-1", "saga", "order", 0, 0, serde_json::json!({"type": "started"}),
//!     "running", "worker-1", 60_000);
//! store.append(entry).await.unwrap();
//! assert_eq!(store.journal("order-1").await.unwrap().len(), 1);
//! # }
//! ```

pub mod error;
pub mod store;
