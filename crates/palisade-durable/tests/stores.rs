//! One behavioural suite, run against every store: the in-memory store, SQLite, and PostgreSQL
//! (feature `postgres`, with `PALISADE_PG_URL` set).

mod suite;

/// Runs every suite function against the store a `$make` expression builds (an async block
/// returning `(Arc<dyn Store>, guard)`, the guard kept alive for the test).
macro_rules! store_suite {
    ($module:ident, $make:expr) => {
        mod $module {
            #[allow(unused_imports)]
            use super::*;
            store_suite!(@tests $make;
                append_and_read, append_conflicts, claims, claims_are_exclusive,
                reviews, checkpoints_store,
                saga_completes, saga_compensates_in_reverse, saga_first_step_fails,
                compensation_retried_then_escalated_then_retried,
                hopeless_compensation_escalates_at_once_and_discard,
                requested_retry_runs_on_recover, recover_repeats_an_idempotent_step,
                recover_compensates_an_interrupted_step, recover_escalates_an_uncertain_step,
                recover_reruns_an_interrupted_compensation_once,
                another_process_takes_over_after_the_lease, unknown_definition_on_recovery);
        }
    };
    (@tests $make:expr; $($name:ident),*) => {
        $(
            #[tokio::test(start_paused = true)]
            async fn $name() {
                let Some((store, _guard)) = $make.await else { return };
                suite::$name(store).await;
            }
        )*
    };
}

use palisade_durable::store::{MemoryStore, Store};
use std::sync::Arc;

store_suite!(memory, async {
    Some((Arc::new(MemoryStore::new()) as Arc<dyn Store>, ()))
});

#[cfg(feature = "sqlite")]
store_suite!(sqlite, async {
    let dir = tempfile::tempdir().unwrap();
    let store = palisade_durable::store::SqliteStore::open(dir.path().join("journal.db")).unwrap();
    Some((Arc::new(store) as Arc<dyn Store>, dir))
});
