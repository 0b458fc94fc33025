//! Odd names: what one store takes, every store takes, or every store refuses alike, before
//! writing; never a backend error on one store only.

use std::sync::Arc;

use palisade_core::BoxError;
use palisade_durable::checkpoint::Checkpoints;
use palisade_durable::error::{CheckpointError, SagaError, StoreError};
use palisade_durable::saga::StepRequest;
use palisade_durable::store::Store;
use palisade_durable::{SagaDefinition, Sagas, Step};
use serde_json::json;
use tower::service_fn;

/// `n` letters and digits that do not compress (seeded), as a long id or URL would be.
fn incompressible(n: usize) -> String {
    use rand::{Rng, SeedableRng};
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
    (0..n)
        .map(|_| ALPHABET[rng.random_range(0..ALPHABET.len())] as char)
        .collect()
}

/// A long checkpoint agent name (4 000 bytes: a URL, a hash chain) is saved and loaded back on
/// every store, or refused alike with `InvalidAgent`; never a backend error on one store (it
/// was, on PostgreSQL, whose index keys stop near 2.7 kB). The longest name allowed is saved
/// and loaded back on every store.
pub(crate) async fn a_long_agent_name_is_saved_or_refused_alike(store: Arc<dyn Store>) {
    let agent = incompressible(4_000);
    let cps = Checkpoints::new(store.clone());
    match cps.save(&agent, &7u32).await {
        Ok(meta) => {
            assert_eq!(meta.version, 1);
            let loaded = cps.load_latest::<u32>(&agent).await.unwrap();
            assert_eq!((loaded.version, loaded.state), (1, 7));
        }
        Err(CheckpointError::InvalidAgent(_)) => {}
        Err(e) => panic!("a 4 000-byte agent name: {e:?}"),
    }
    let longest = incompressible(palisade_durable::checkpoint::MAX_AGENT_LEN);
    cps.save(&longest, &8u32).await.unwrap();
    assert_eq!(cps.load_latest::<u32>(&longest).await.unwrap().state, 8);
    let longer = format!("{longest}x");
    assert!(matches!(
        cps.save(&longer, &9u32).await,
        Err(CheckpointError::InvalidAgent(_))
    ));
}

/// A saga definition's name or the engine's owner name holding a NUL character runs the saga
/// on every store, or is refused alike (by `SagaDefinition::new`, the builder, or `run` before
/// writing); never a backend error on one store, after which the saga did not start (as on
/// PostgreSQL once).
pub(crate) async fn names_with_a_nul_character_are_stored_or_refused_alike(store: Arc<dyn Store>) {
    let step = || {
        Step::new(
            "a",
            service_fn(|_r: StepRequest| async { Ok::<_, BoxError>(json!(1)) }),
        )
    };
    let mut failures = Vec::new();
    for (what, definition, owner) in [
        ("definition name", "order\0v2", "local"),
        ("owner name", "order", "host\0a"),
    ] {
        let Ok(def) = SagaDefinition::new(definition, vec![step()]) else {
            continue;
        };
        let Ok(sagas) = Sagas::builder(store.clone())
            .define(def)
            .owner(owner)
            .build()
        else {
            continue;
        };
        let id = format!("nul-{}", what.len());
        match sagas.run(definition, &id, json!({})).await {
            Ok(_) => {}
            Err(SagaError::Store(e @ StoreError::Backend(_))) => {
                failures.push(format!("{what} {definition:?}/{owner:?}: {e}"));
            }
            Err(_) => {}
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
}
