//! Checkpoints: an agent's state, versioned and checksummed, with fallback to the newest good
//! version.

use std::fmt;
use std::sync::Arc;

use palisade_core::ConfigError;
use serde::Serialize;
use serde::de::DeserializeOwned;
use sha2::{Digest, Sha256};

use crate::engine::now_ms;
use crate::error::{CheckpointError, StoreError};
use crate::journal::{MAX_DEPTH, text_nests_deeper_than};
use crate::store::{CheckpointMeta, Store, StoredCheckpoint};

/// How many times [`Checkpoints::load_latest_bytes`] lists an agent's versions when every
/// version it listed was pruned (by a concurrent save) before it could read it.
const LIST_ROUNDS: usize = 4;

/// The SHA-256 of `data`, as lower-case hex.
pub fn checksum(data: &[u8]) -> String {
    use std::fmt::Write;
    let digest = Sha256::digest(data);
    let mut s = String::with_capacity(64);
    for b in digest {
        // Writing to a String cannot fail.
        let _ = write!(s, "{b:02x}");
    }
    s
}

/// A loaded checkpoint.
#[derive(Debug)]
#[non_exhaustive]
pub struct Loaded<T> {
    /// Its version.
    pub version: u64,
    /// When it was saved (ms since the Unix epoch).
    pub at_ms: u64,
    /// The state.
    pub state: T,
    /// The newer versions that were skipped because their data did not match their checksum
    /// ([`CheckpointError::Corrupt`]), newest first. Empty when the latest version was good.
    pub corrupt: Vec<CheckpointError>,
}

/// The longest agent name, in bytes: 200, as saga and transaction ids. PostgreSQL indexes a
/// checkpoint by its agent and version, and an index key cannot be much above 2 kB: a longer
/// name would save on one store and fail on another.
pub const MAX_AGENT_LEN: usize = 200;

/// Saves and loads agents' checkpoints in a store.
///
/// Each save is a new version (1, 2, ...) with the time and the SHA-256 of the data; saves
/// may run at once (see *Concurrency* on [`save`](Checkpoints::save)). Loading
/// verifies the checksum: [`load_latest`](Checkpoints::load_latest) falls back to the newest
/// version that verifies and reports the corrupt ones it skipped in [`Loaded::corrupt`];
/// [`load_version`](Checkpoints::load_version) fails with [`CheckpointError::Corrupt`].
/// Corrupt data is never returned as state.
///
/// ```
/// use std::sync::Arc;
/// use palisade_durable::checkpoint::Checkpoints;
/// use palisade_durable::store::MemoryStore;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let store = MemoryStore::new();
/// let cps = Checkpoints::new(Arc::new(store.clone())).keep_last(2).unwrap();
/// for page in 1..=3u32 {
///     cps.save("crawler", &page).await.unwrap();
/// }
/// assert_eq!(cps.versions("crawler").await.unwrap().len(), 2); // version 1 was pruned
///
/// store.corrupt_checkpoint("crawler", 3, b"garbage".to_vec());
/// let loaded = cps.load_latest::<u32>("crawler").await.unwrap();
/// assert_eq!((loaded.version, loaded.state), (2, 2));
/// assert_eq!(loaded.corrupt.len(), 1); // version 3, reported
/// # }
/// ```
#[derive(Clone)]
pub struct Checkpoints {
    store: Arc<dyn Store>,
    keep: Option<usize>,
}

impl fmt::Debug for Checkpoints {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Checkpoints")
            .field("store", &self.store)
            .field("keep", &self.keep)
            .finish()
    }
}

impl Checkpoints {
    /// Checkpoints in `store`, keeping every version.
    pub fn new(store: Arc<dyn Store>) -> Self {
        Checkpoints { store, keep: None }
    }

    /// The same, keeping only the newest `n` versions of each agent (older ones are deleted
    /// after each save; if that fails, the save still succeeds, the failure is logged, and
    /// the next save deletes them). `n` must be at least 1.
    pub fn keep_last(mut self, n: usize) -> Result<Self, ConfigError> {
        if n == 0 {
            return Err(ConfigError::new("keep_last", "must be at least 1"));
        }
        self.keep = Some(n);
        Ok(self)
    }

    /// Saves `data` as the next version of `agent`'s state.
    ///
    /// Saves of the same agent may run at once (from clones of this `Checkpoints`, or from
    /// several processes sharing a store): each gets a version of its own, one more than the
    /// newest stored when it is written, and none fails because of the others (the store
    /// allocates the version, [`Store::checkpoint_put_next`]). Which of them gets which
    /// version is the order the store writes them in.
    ///
    /// An agent name longer than [`MAX_AGENT_LEN`] bytes or holding a NUL character is refused
    /// with [`CheckpointError::InvalidAgent`] (PostgreSQL cannot store a NUL, nor index a key
    /// much above 2 kB; every store refuses them alike), and nothing is written.
    pub async fn save_bytes(
        &self,
        agent: &str,
        data: Vec<u8>,
    ) -> Result<CheckpointMeta, CheckpointError> {
        self.put(agent, data, None).await
    }

    /// Saves `state` as exactly version `version` of `agent` (checked as
    /// [`save`](Checkpoints::save) checks it): a [`StoreError::Conflict`] if that version
    /// exists. The fenced write of [`Lifecycle`](crate::lifecycle::Lifecycle).
    pub(crate) async fn save_at<T: Serialize + ?Sized>(
        &self,
        agent: &str,
        state: &T,
        version: u64,
    ) -> Result<CheckpointMeta, CheckpointError> {
        let data = encode(agent, state)?;
        self.put(agent, data, Some(version)).await
    }

    /// Saves `data` as the next version of `agent`, or as exactly `version`.
    async fn put(
        &self,
        agent: &str,
        data: Vec<u8>,
        version: Option<u64>,
    ) -> Result<CheckpointMeta, CheckpointError> {
        if agent.len() > MAX_AGENT_LEN || agent.contains('\0') {
            return Err(CheckpointError::InvalidAgent(agent.to_owned()));
        }
        let mut meta = CheckpointMeta {
            version: 0,
            at_ms: now_ms(),
            checksum: checksum(&data),
            len: data.len() as u64,
        };
        let cp = StoredCheckpoint {
            agent: agent.to_owned(),
            version: version.unwrap_or(0),
            at_ms: meta.at_ms,
            checksum: meta.checksum.clone(),
            data,
        };
        meta.version = match version {
            Some(v) => {
                self.store.checkpoint_put(cp).await?;
                v
            }
            None => self.store.checkpoint_put_next(cp).await?,
        };
        if let Some(keep) = self.keep
            && let Err(e) = self.store.checkpoint_prune(agent, keep).await
        {
            // The checkpoint is saved: an error would tell the caller it was not. The next
            // save prunes what this one could not.
            tracing::warn!(agent, version = meta.version, error = %e,
                "saved a checkpoint but could not prune older ones");
        }
        Ok(meta)
    }

    /// Saves `state` (as JSON) as the next version of `agent`'s state.
    ///
    /// # Concurrency
    ///
    /// Saves of the same agent may run at once, from clones of this `Checkpoints` or from
    /// several processes sharing the store: each succeeds with a version of its own, and
    /// together they take consecutive versions, in the order the store writes them (as
    /// [`save_bytes`](Checkpoints::save_bytes)). With [`keep_last`](Checkpoints::keep_last),
    /// each save prunes after writing, so the newest `n` are kept whatever the order.
    ///
    /// # Errors
    ///
    /// A state that nests arrays and objects deeper than [`MAX_DEPTH`] levels is refused with
    /// [`CheckpointError::InvalidState`], and nothing is written: `serde_json` reads at most
    /// 128 levels, so [`load_latest`](Checkpoints::load_latest) could never read it back (it
    /// failed with [`CheckpointError::Serde`] on every load, and the fallback skips only
    /// corrupt versions, so the agent's older good state was out of reach too). Refusing it
    /// was chosen over reading any depth back because decoding without the limit recurses
    /// once per level on the stack, and the save is where the caller can still act on it.
    /// The limit is the journal's, so a value that can be a saga's input can be a
    /// checkpoint.
    ///
    /// A state holding a float that is NaN or infinite (`f64` or `f32`) is refused the same
    /// way, naming where it is (`state.score is NaN`): JSON has no such numbers, and
    /// `serde_json` writes them as `null`, which loading reads back as no float at all (an
    /// error on every load, hiding the older good versions, or, for an `Option<f64>`,
    /// `None`). The state is walked for such floats only when its JSON holds `null`
    /// somewhere, so a state without one costs no second pass.
    ///
    /// [`save_bytes`](Checkpoints::save_bytes) stores bytes as they are, JSON or not, and
    /// checks nothing.
    pub async fn save<T: Serialize + ?Sized>(
        &self,
        agent: &str,
        state: &T,
    ) -> Result<CheckpointMeta, CheckpointError> {
        let data = encode(agent, state)?;
        self.save_bytes(agent, data).await
    }
}

/// `state` as JSON, refused if it could not be loaded back (see [`Checkpoints::save`]).
fn encode<T: Serialize + ?Sized>(agent: &str, state: &T) -> Result<Vec<u8>, CheckpointError> {
    let data = serde_json::to_vec(state)?;
    if text_nests_deeper_than(&data, MAX_DEPTH) {
        return Err(CheckpointError::InvalidState {
            agent: agent.to_owned(),
            reason: format!(
                "it nests arrays and objects deeper than {MAX_DEPTH} levels, which loading \
                     could not read back"
            ),
        });
    }
    // Non-finite floats are written as `null`: none can hide in JSON without one.
    if data.windows(4).any(|w| w == b"null")
        && let Err((value, path)) = finite::check(state)
    {
        return Err(CheckpointError::InvalidState {
            agent: agent.to_owned(),
            reason: format!(
                "state{path} is {value}, which JSON cannot hold: it would be written as \
                     null, which loading could not read back as that number"
            ),
        });
    }
    Ok(data)
}

impl Checkpoints {
    fn verify(cp: StoredCheckpoint) -> Result<StoredCheckpoint, CheckpointError> {
        let actual = checksum(&cp.data);
        if actual != cp.checksum {
            tracing::error!(agent = %cp.agent, version = cp.version, "checkpoint is corrupt");
            return Err(CheckpointError::Corrupt {
                agent: cp.agent,
                version: cp.version,
                expected: cp.checksum,
                actual,
            });
        }
        Ok(cp)
    }

    /// Version `version` of `agent`'s state, verified.
    pub async fn load_version_bytes(
        &self,
        agent: &str,
        version: u64,
    ) -> Result<Loaded<Vec<u8>>, CheckpointError> {
        let cp = self
            .store
            .checkpoint_get(agent, version)
            .await?
            .ok_or_else(|| CheckpointError::NotFound {
                agent: agent.to_owned(),
                version: Some(version),
            })?;
        let cp = Self::verify(cp)?;
        Ok(Loaded {
            version: cp.version,
            at_ms: cp.at_ms,
            state: cp.data,
            corrupt: Vec::new(),
        })
    }

    /// The newest version of `agent`'s state whose checksum verifies; newer, corrupt versions
    /// are skipped and reported in [`Loaded::corrupt`].
    ///
    /// # Concurrency
    ///
    /// A save from another process (or a clone) may prune versions between the listing of
    /// `agent`'s versions and the read of one of them. A listed version that has vanished is
    /// skipped; if no version listed could be read, the versions are listed again and read
    /// again, up to four times in all, since what pruned them saved a newer one.
    /// Only then is the agent reported to have no checkpoint ([`CheckpointError::NotFound`]).
    pub async fn load_latest_bytes(&self, agent: &str) -> Result<Loaded<Vec<u8>>, CheckpointError> {
        let mut corrupt = Vec::new();
        for _ in 0..LIST_ROUNDS {
            let versions = self.store.checkpoint_versions(agent).await?;
            corrupt.clear();
            let mut vanished = false;
            for meta in &versions {
                match self.load_version_bytes(agent, meta.version).await {
                    Ok(mut loaded) => {
                        loaded.corrupt = corrupt;
                        return Ok(loaded);
                    }
                    Err(e @ CheckpointError::Corrupt { .. }) => corrupt.push(e),
                    // Pruned between the listing and the read: try the next one.
                    Err(CheckpointError::NotFound { .. }) => vanished = true,
                    Err(e) => return Err(e),
                }
            }
            if !vanished {
                break;
            }
            // Every version listed was pruned or corrupt: a newer one was saved meanwhile.
            tracing::debug!(
                agent,
                "checkpoints pruned while being read; listing them again"
            );
        }
        if corrupt.is_empty() {
            return Err(CheckpointError::NotFound {
                agent: agent.to_owned(),
                version: None,
            });
        }
        Err(CheckpointError::NoGoodVersion {
            agent: agent.to_owned(),
            corrupt: corrupt.len(),
        })
    }

    /// Like [`load_latest_bytes`](Checkpoints::load_latest_bytes), decoded from JSON.
    ///
    /// Data that verifies but does not decode as `T` is an error
    /// ([`CheckpointError::Serde`]), not a reason to fall back: it is what was saved.
    pub async fn load_latest<T: DeserializeOwned>(
        &self,
        agent: &str,
    ) -> Result<Loaded<T>, CheckpointError> {
        decode(self.load_latest_bytes(agent).await?)
    }

    /// Like [`load_version_bytes`](Checkpoints::load_version_bytes), decoded from JSON.
    pub async fn load_version<T: DeserializeOwned>(
        &self,
        agent: &str,
        version: u64,
    ) -> Result<Loaded<T>, CheckpointError> {
        decode(self.load_version_bytes(agent, version).await?)
    }

    /// `agent`'s versions, newest first.
    pub async fn versions(&self, agent: &str) -> Result<Vec<CheckpointMeta>, StoreError> {
        self.store.checkpoint_versions(agent).await
    }
}

fn decode<T: DeserializeOwned>(l: Loaded<Vec<u8>>) -> Result<Loaded<T>, CheckpointError> {
    Ok(Loaded {
        version: l.version,
        at_ms: l.at_ms,
        state: serde_json::from_slice(&l.state)?,
        corrupt: l.corrupt,
    })
}

/// Finds a float in a state that JSON cannot hold (NaN, infinite), by serializing the state
/// into a serializer that keeps nothing.
mod finite {
    use std::fmt;

    use serde::Serialize;
    use serde::ser::{self, Serializer};

    /// What stopped the walk.
    #[derive(Debug)]
    pub(super) enum Found {
        /// A NaN or infinite float, and the path to it, innermost segment first.
        NonFinite { value: f64, path: Vec<String> },
        /// The state's own `Serialize` failed (it did not under `serde_json`).
        Other,
    }

    impl fmt::Display for Found {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            match self {
                Found::NonFinite { value, .. } => write!(f, "a float that is {value}"),
                Found::Other => f.write_str("the state could not be serialized"),
            }
        }
    }

    impl std::error::Error for Found {}

    impl ser::Error for Found {
        fn custom<T: fmt::Display>(_: T) -> Self {
            Found::Other
        }
    }

    /// The first NaN or infinite float in `state`, with its path (`.field`, `[index]`,
    /// `["key"]`); `Ok` if there is none (or if the state's `Serialize` failed, which
    /// `serde_json` reports on its own).
    pub(super) fn check<T: Serialize + ?Sized>(state: &T) -> Result<(), (f64, String)> {
        match state.serialize(Check) {
            Err(Found::NonFinite { value, path }) => {
                Err((value, path.iter().rev().map(String::as_str).collect()))
            }
            _ => Ok(()),
        }
    }

    type Walk = Result<(), Found>;

    /// `walk`, with `segment` added to the path of a float found in it.
    fn at(walk: Walk, segment: impl FnOnce() -> String) -> Walk {
        walk.map_err(|mut found| {
            if let Found::NonFinite { path, .. } = &mut found {
                path.push(segment());
            }
            found
        })
    }

    fn finite(value: f64) -> Walk {
        if value.is_finite() {
            Ok(())
        } else {
            Err(Found::NonFinite {
                value,
                path: Vec::new(),
            })
        }
    }

    struct Check;

    /// A sequence, map or struct being walked: the next element's index, the last map key.
    #[derive(Default)]
    struct Compound {
        index: usize,
        key: String,
    }

    impl Compound {
        fn element<T: Serialize + ?Sized>(&mut self, value: &T) -> Walk {
            let i = self.index;
            self.index += 1;
            at(value.serialize(Check), || format!("[{i}]"))
        }
    }

    macro_rules! accept {
        ($($method:ident($ty:ty)),* $(,)?) => {
            $(fn $method(self, _: $ty) -> Walk { Ok(()) })*
        };
    }

    impl Serializer for Check {
        type Ok = ();
        type Error = Found;
        type SerializeSeq = Compound;
        type SerializeTuple = Compound;
        type SerializeTupleStruct = Compound;
        type SerializeTupleVariant = Compound;
        type SerializeMap = Compound;
        type SerializeStruct = Compound;
        type SerializeStructVariant = Compound;

        accept!(
            serialize_bool(bool),
            serialize_i8(i8),
            serialize_i16(i16),
            serialize_i32(i32),
            serialize_i64(i64),
            serialize_i128(i128),
            serialize_u8(u8),
            serialize_u16(u16),
            serialize_u32(u32),
            serialize_u64(u64),
            serialize_u128(u128),
            serialize_char(char),
            serialize_str(&str),
            serialize_bytes(&[u8]),
            serialize_unit_struct(&'static str),
        );

        fn serialize_f32(self, v: f32) -> Walk {
            finite(f64::from(v))
        }
        fn serialize_f64(self, v: f64) -> Walk {
            finite(v)
        }
        fn serialize_none(self) -> Walk {
            Ok(())
        }
        fn serialize_some<T: Serialize + ?Sized>(self, value: &T) -> Walk {
            value.serialize(self)
        }
        fn serialize_unit(self) -> Walk {
            Ok(())
        }
        fn serialize_unit_variant(self, _: &'static str, _: u32, _: &'static str) -> Walk {
            Ok(())
        }
        fn serialize_newtype_struct<T: Serialize + ?Sized>(
            self,
            _: &'static str,
            value: &T,
        ) -> Walk {
            value.serialize(self)
        }
        fn serialize_newtype_variant<T: Serialize + ?Sized>(
            self,
            _: &'static str,
            _: u32,
            variant: &'static str,
            value: &T,
        ) -> Walk {
            at(value.serialize(self), || format!(".{variant}"))
        }
        fn serialize_seq(self, _: Option<usize>) -> Result<Compound, Found> {
            Ok(Compound::default())
        }
        fn serialize_tuple(self, _: usize) -> Result<Compound, Found> {
            Ok(Compound::default())
        }
        fn serialize_tuple_struct(self, _: &'static str, _: usize) -> Result<Compound, Found> {
            Ok(Compound::default())
        }
        fn serialize_tuple_variant(
            self,
            _: &'static str,
            _: u32,
            variant: &'static str,
            _: usize,
        ) -> Result<Compound, Found> {
            Ok(Compound {
                index: 0,
                key: variant.to_owned(),
            })
        }
        fn serialize_map(self, _: Option<usize>) -> Result<Compound, Found> {
            Ok(Compound::default())
        }
        fn serialize_struct(self, _: &'static str, _: usize) -> Result<Compound, Found> {
            Ok(Compound::default())
        }
        fn serialize_struct_variant(
            self,
            _: &'static str,
            _: u32,
            variant: &'static str,
            _: usize,
        ) -> Result<Compound, Found> {
            Ok(Compound {
                index: 0,
                key: variant.to_owned(),
            })
        }
    }

    // The sequences: each element at the next index.
    macro_rules! elements {
        ($($kind:ident::$method:ident),+) => {$(
            impl ser::$kind for Compound {
                type Ok = ();
                type Error = Found;
                fn $method<T: Serialize + ?Sized>(&mut self, value: &T) -> Walk {
                    self.element(value)
                }
                fn end(self) -> Walk {
                    Ok(())
                }
            }
        )+};
    }
    elements!(
        SerializeSeq::serialize_element,
        SerializeTuple::serialize_element,
        SerializeTupleStruct::serialize_field
    );

    impl ser::SerializeTupleVariant for Compound {
        type Ok = ();
        type Error = Found;
        fn serialize_field<T: Serialize + ?Sized>(&mut self, value: &T) -> Walk {
            let variant = &self.key;
            let i = self.index;
            self.index += 1;
            at(value.serialize(Check), || format!(".{variant}[{i}]"))
        }
        fn end(self) -> Walk {
            Ok(())
        }
    }

    impl ser::SerializeMap for Compound {
        type Ok = ();
        type Error = Found;
        fn serialize_key<T: Serialize + ?Sized>(&mut self, key: &T) -> Walk {
            // `serde_json` refuses a NaN or infinite key itself; the key is kept for the path.
            self.key = serde_json::to_string(key).unwrap_or_default();
            Ok(())
        }
        fn serialize_value<T: Serialize + ?Sized>(&mut self, value: &T) -> Walk {
            let key = &self.key;
            at(value.serialize(Check), || format!("[{key}]"))
        }
        fn end(self) -> Walk {
            Ok(())
        }
    }

    impl ser::SerializeStruct for Compound {
        type Ok = ();
        type Error = Found;
        fn serialize_field<T: Serialize + ?Sized>(
            &mut self,
            name: &'static str,
            value: &T,
        ) -> Walk {
            at(value.serialize(Check), || format!(".{name}"))
        }
        fn end(self) -> Walk {
            Ok(())
        }
    }

    impl ser::SerializeStructVariant for Compound {
        type Ok = ();
        type Error = Found;
        fn serialize_field<T: Serialize + ?Sized>(
            &mut self,
            name: &'static str,
            value: &T,
        ) -> Walk {
            let variant = &self.key;
            at(value.serialize(Check), || format!(".{variant}.{name}"))
        }
        fn end(self) -> Walk {
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::MemoryStore;

    #[test]
    fn sha256_of_known_inputs() {
        assert_eq!(
            checksum(b""),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        assert_eq!(
            checksum(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn debug_shows_the_store_and_how_many_versions_are_kept() {
        let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
        let shown = format!(
            "{:?}",
            Checkpoints::new(store.clone()).keep_last(2).unwrap()
        );
        assert!(shown.starts_with("Checkpoints { store: "), "{shown}");
        assert!(shown.ends_with(", keep: Some(2) }"), "{shown}");
        let all = format!("{:?}", Checkpoints::new(store));
        assert!(all.ends_with(", keep: None }"), "{all}");
    }

    #[tokio::test]
    async fn fall_back_report_and_give_up() {
        let store = MemoryStore::new();
        let cps = Checkpoints::new(Arc::new(store.clone()));
        assert!(matches!(
            cps.load_latest::<u32>("a").await,
            Err(CheckpointError::NotFound { version: None, .. })
        ));
        for v in 1..=3u32 {
            assert_eq!(
                cps.save("a", &(v * 10)).await.unwrap().version,
                u64::from(v)
            );
        }
        let l = cps.load_latest::<u32>("a").await.unwrap();
        assert_eq!((l.version, l.state, l.corrupt.len()), (3, 30, 0));
        assert_eq!(cps.load_version::<u32>("a", 1).await.unwrap().state, 10);
        assert!(matches!(
            cps.load_version::<u32>("a", 7).await,
            Err(CheckpointError::NotFound {
                version: Some(7),
                ..
            })
        ));

        store.corrupt_checkpoint("a", 3, b"31".to_vec());
        store.corrupt_checkpoint("a", 2, b"21".to_vec());
        let l = cps.load_latest::<u32>("a").await.unwrap();
        assert_eq!((l.version, l.state), (1, 10));
        let skipped: Vec<u64> = l
            .corrupt
            .iter()
            .map(|e| match e {
                CheckpointError::Corrupt { version, .. } => *version,
                _ => 0,
            })
            .collect();
        assert_eq!(skipped, [3, 2]);
        // Asked for by version, corruption is an error, never data.
        let err = cps.load_version::<u32>("a", 3).await.unwrap_err();
        assert!(err.to_string().contains("version 3 is corrupt"), "{err}");

        store.corrupt_checkpoint("a", 1, b"11".to_vec());
        assert!(matches!(
            cps.load_latest::<u32>("a").await,
            Err(CheckpointError::NoGoodVersion { corrupt: 3, .. })
        ));
        // A new save goes on from the newest version, corrupt or not.
        assert_eq!(cps.save("a", &40u32).await.unwrap().version, 4);
        assert_eq!(cps.load_latest::<u32>("a").await.unwrap().state, 40);
        // Data that verifies but is not the type asked for.
        assert!(matches!(
            cps.load_latest::<String>("a").await,
            Err(CheckpointError::Serde(_))
        ));
    }

    #[tokio::test]
    async fn keep_last_prunes() {
        let cps = Checkpoints::new(Arc::new(MemoryStore::new()))
            .keep_last(3)
            .unwrap();
        for v in 0..10u32 {
            cps.save("a", &v).await.unwrap();
        }
        let versions: Vec<u64> = cps
            .versions("a")
            .await
            .unwrap()
            .iter()
            .map(|m| m.version)
            .collect();
        assert_eq!(versions, [10, 9, 8]);
        assert!(
            Checkpoints::new(Arc::new(MemoryStore::new()))
                .keep_last(0)
                .is_err()
        );
    }
}
