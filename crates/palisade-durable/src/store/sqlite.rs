//! The embedded store: SQLite on local disk.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use palisade_core::ConfigError;
use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};

use super::memory::{check_append, lost};
use super::{
    Append, BoxFuture, CheckpointMeta, Claim, JournalEntry, Purge, Store, StoredCheckpoint,
    StoredReview, WorkflowRecord, checkpoint_conflict, next_checkpoint_version,
};
use super::{from_sql_int, sql_int};
use crate::error::StoreError;

/// Options of a [`SqliteStore`].
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct SqliteOptions {
    /// `PRAGMA synchronous = FULL` (the default, `true`): an append that returned survives a
    /// power cut. With `false` (`NORMAL`, still in WAL mode) it survives the process being
    /// killed but the last appends may be lost in a power cut; appends are several times faster.
    pub durable: bool,
    /// How long a writer waits for another process's lock on the same file before failing
    /// (default 5 s, at most 1 hour: [`SqliteStore::open_with`] refuses a longer one).
    pub busy_timeout: Duration,
}

impl Default for SqliteOptions {
    fn default() -> Self {
        SqliteOptions {
            durable: true,
            busy_timeout: Duration::from_secs(5),
        }
    }
}

impl SqliteOptions {
    /// The same options, durable against power cuts or only against process crashes.
    pub fn durable(mut self, durable: bool) -> Self {
        self.durable = durable;
        self
    }

    /// The same options with another busy timeout.
    pub fn busy_timeout(mut self, timeout: Duration) -> Self {
        self.busy_timeout = timeout;
        self
    }
}

/// The longest [`SqliteOptions::busy_timeout`]: 1 hour.
pub(crate) const MAX_BUSY_TIMEOUT: Duration = Duration::from_secs(60 * 60);

/// The embedded default store: one SQLite file on local disk, no server.
///
/// The file is opened in WAL mode (readers never block the writer) and every
/// [`append`](Store::append) is one `IMMEDIATE` transaction: the entry and the workflow's new
/// state are on disk, or neither is, before the future resolves.
///
/// # Threads
///
/// SQLite calls block, so they never run on the async runtime's worker threads: each
/// operation runs on tokio's blocking pool (`tokio::task::spawn_blocking`), holding the
/// store's one connection behind a mutex. One connection serializes the operations of this
/// process, which costs nothing SQLite would not impose anyway (one writer at a time) and
/// keeps the prepared-statement cache warm. The blocking pool, rather than a thread of the
/// store's own, is what tokio's paused test clock knows about: it does not jump ahead while
/// an operation is on disk, so tests with `start_paused` see the store's latency as zero
/// instead of as "idle". The store spawns nothing of its own. Its methods must be awaited
/// inside a tokio runtime.
///
/// Several processes may open the same file (the command-line tool next to a running
/// service): writers wait up to [`SqliteOptions::busy_timeout`] for each other, and claims
/// keep them off each other's workflows.
///
/// # Schema
///
/// Tables are created when the file is opened, if missing. A file made by an earlier version
/// (without the `released_by` column of [`Store::release`], or the `instance` and `renewed`
/// columns of a claim's engine instance and renewal time) gets the columns added then, in
/// the same transaction; the earlier version's rows read as never released, held by the
/// empty instance, renewed at an unknown time (so another instance of their owner waits for
/// their lease to end, as another owner does). One without the
/// `reviews_workflow` index (review items by workflow, through which a
/// [`purge`](Store::purge) deletes the items of the workflows it deletes) gets that too.
///
/// A [`claim`](Store::claim) selects in SQL, states included, through the `workflows_kind_state`
/// index (there since the first version): recovery reads the workflows it may take, not the
/// finished ones a store keeps until [`purge`](Store::purge). A purge selects the same way:
/// it reads the finished workflows of its kind, not the running ones.
#[derive(Clone, Debug)]
pub struct SqliteStore {
    conn: Arc<Mutex<Connection>>,
    path: PathBuf,
}

/// The tables as the first version made them; [`create_schema`] adds the columns added since.
const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS workflows (
    id TEXT PRIMARY KEY, kind TEXT NOT NULL, name TEXT NOT NULL, state TEXT NOT NULL,
    owner TEXT, lease_until INTEGER NOT NULL, created INTEGER NOT NULL,
    updated INTEGER NOT NULL, entries INTEGER NOT NULL);
CREATE INDEX IF NOT EXISTS workflows_kind_state ON workflows (kind, state);
CREATE TABLE IF NOT EXISTS journal (
    workflow TEXT NOT NULL, seq INTEGER NOT NULL, at INTEGER NOT NULL, event TEXT NOT NULL,
    PRIMARY KEY (workflow, seq)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS reviews (
    id TEXT PRIMARY KEY, workflow TEXT NOT NULL, status TEXT NOT NULL,
    updated INTEGER NOT NULL, body TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS checkpoints (
    agent TEXT NOT NULL, version INTEGER NOT NULL, at INTEGER NOT NULL,
    checksum TEXT NOT NULL, data BLOB NOT NULL, PRIMARY KEY (agent, version));
";

/// The indexes added since the first version: a [`purge`](Store::purge) deletes the review
/// items of each workflow it deletes by workflow.
const INDEXES: &str = "CREATE INDEX IF NOT EXISTS reviews_workflow ON reviews (workflow);";

fn db(e: rusqlite::Error) -> StoreError {
    StoreError::backend(e)
}

fn is_constraint(e: &rusqlite::Error) -> bool {
    matches!(e, rusqlite::Error::SqliteFailure(f, _) if f.code == rusqlite::ErrorCode::ConstraintViolation)
}

fn json(text: &str) -> Result<serde_json::Value, StoreError> {
    serde_json::from_str(text).map_err(|e| StoreError::Corrupt(format!("{e}: {text:.80}")))
}

fn workflow_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<WorkflowRecord> {
    Ok(WorkflowRecord {
        id: r.get(0)?,
        kind: r.get(1)?,
        name: r.get(2)?,
        state: r.get(3)?,
        owner: r.get(4)?,
        lease_until_ms: from_sql_int(r.get(5)?),
        created_ms: from_sql_int(r.get(6)?),
        updated_ms: from_sql_int(r.get(7)?),
        entries: from_sql_int(r.get(8)?),
    })
}

/// The columns `workflow_row` reads, as a literal so that queries are constants (and so
/// prepared once per connection through its statement cache).
macro_rules! workflow_columns {
    () => {
        "id, kind, name, state, owner, lease_until, created, updated, entries"
    };
}

/// One workflow by id.
const SELECT_WORKFLOW: &str = concat!(
    "SELECT ",
    workflow_columns!(),
    " FROM workflows WHERE id = ?1"
);

/// One workflow by id, then the instance holding its claim.
const SELECT_HELD_WORKFLOW: &str = concat!(
    "SELECT ",
    workflow_columns!(),
    ", instance FROM workflows WHERE id = ?1"
);

impl SqliteStore {
    /// [`Store::renew_instance`]; with `now_ms` `None` ([`Store::renew`]), the renewal time
    /// becomes unknown.
    fn renew_held(
        &self,
        id: &str,
        owner: &str,
        instance: &str,
        now_ms: Option<u64>,
        lease_until_ms: u64,
    ) -> BoxFuture<'static, Result<(), StoreError>> {
        let (id, owner, instance) = (id.to_owned(), owner.to_owned(), instance.to_owned());
        let now = now_ms.map(sql_int);
        self.run(move |c| {
            let n = c
                .prepare_cached(
                    "UPDATE workflows SET lease_until = max(lease_until, ?3),
                       renewed = CASE WHEN ?5 IS NULL THEN NULL
                                      ELSE max(coalesce(renewed, ?5), ?5) END
                     WHERE id = ?1 AND owner = ?2 AND (?4 = '' OR instance = ?4)",
                )
                .map_err(db)?
                .execute(params![id, owner, sql_int(lease_until_ms), instance, now])
                .map_err(db)?;
            if n == 1 {
                Ok(())
            } else {
                Err(lost(&id, &owner))
            }
        })
    }

    /// Opens (or creates) the store at `path` with the default, durable options.
    ///
    /// A [`StoreError::Open`] naming `path` if the file cannot be opened or set up (it is not
    /// a SQLite database, its directory does not exist, another process holds it locked for
    /// longer than the busy timeout).
    pub fn open(path: impl AsRef<Path>) -> Result<Self, StoreError> {
        Self::open_with(path, SqliteOptions::default())
    }

    /// Opens (or creates) the store at `path`.
    ///
    /// A [`StoreError::Config`] naming `busy_timeout` if it is longer than an hour (SQLite
    /// counts it in milliseconds in a 32-bit integer; a writer that waits longer for a lock
    /// is stuck, not patient); nothing is opened or created then. A [`StoreError::Open`]
    /// naming `path`, as for [`open`](SqliteStore::open), if the file cannot be opened or set
    /// up.
    pub fn open_with(path: impl AsRef<Path>, options: SqliteOptions) -> Result<Self, StoreError> {
        if options.busy_timeout > MAX_BUSY_TIMEOUT {
            return Err(ConfigError::new("busy_timeout", "must be at most 1 hour").into());
        }
        let path = path.as_ref().to_path_buf();
        let conn = set_up(&path, &options).map_err(|e| StoreError::Open {
            path: path.clone(),
            source: Box::new(e),
        })?;
        Ok(SqliteStore {
            conn: Arc::new(Mutex::new(conn)),
            path,
        })
    }

    /// The file this store writes.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn run<T, F>(&self, f: F) -> BoxFuture<'static, Result<T, StoreError>>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> Result<T, StoreError> + Send + 'static,
    {
        let conn = self.conn.clone();
        Box::pin(async move {
            tokio::task::spawn_blocking(move || {
                // A panic inside rusqlite cannot leave a half-done transaction behind (it is
                // rolled back when dropped), so a poisoned lock is taken over.
                let mut conn = conn.lock().unwrap_or_else(|p| p.into_inner());
                f(&mut conn)
            })
            .await
            .map_err(|_| StoreError::Closed)?
        })
    }

    /// Overwrites the data of a stored checkpoint without updating its checksum: a test hook
    /// that simulates corruption on disk. Returns whether the checkpoint existed.
    pub async fn corrupt_checkpoint(
        &self,
        agent: &str,
        version: u64,
        data: Vec<u8>,
    ) -> Result<bool, StoreError> {
        let agent = agent.to_owned();
        self.run(move |c| {
            let n = c
                .execute(
                    "UPDATE checkpoints SET data = ?3 WHERE agent = ?1 AND version = ?2",
                    params![agent, sql_int(version), data],
                )
                .map_err(db)?;
            Ok(n == 1)
        })
        .await
    }
}

/// Opens the file at `path` with `options` and creates or updates its schema.
fn set_up(path: &Path, options: &SqliteOptions) -> rusqlite::Result<Connection> {
    let mut conn = Connection::open(path)?;
    conn.busy_timeout(options.busy_timeout)?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(
        None,
        "synchronous",
        if options.durable { "FULL" } else { "NORMAL" },
    )?;
    create_schema(&mut conn)?;
    Ok(conn)
}

/// Creates the tables if missing and adds what an earlier version's file lacks, in one
/// `IMMEDIATE` transaction, so that processes opening the file together do not race.
fn create_schema(conn: &mut Connection) -> rusqlite::Result<()> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    tx.execute_batch(SCHEMA)?;
    let released_by: i64 = tx.query_row(
        "SELECT count(*) FROM pragma_table_info('workflows') WHERE name = 'released_by'",
        [],
        |r| r.get(0),
    )?;
    if released_by == 0 {
        tx.execute_batch("ALTER TABLE workflows ADD COLUMN released_by TEXT")?;
    }
    let instance: i64 = tx.query_row(
        "SELECT count(*) FROM pragma_table_info('workflows') WHERE name = 'instance'",
        [],
        |r| r.get(0),
    )?;
    if instance == 0 {
        tx.execute_batch(
            "ALTER TABLE workflows ADD COLUMN instance TEXT NOT NULL DEFAULT '';
             ALTER TABLE workflows ADD COLUMN renewed INTEGER",
        )?;
    }
    tx.execute_batch(INDEXES)?;
    tx.commit()
}

fn append(conn: &mut Connection, a: Append) -> Result<(), StoreError> {
    let event = a.event.to_string();
    let owner = (!a.release).then_some(a.owner.as_str());
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(db)?;
    if a.seq == 0 {
        tx.prepare_cached(
            "INSERT INTO workflows (id, kind, name, state, owner, lease_until, created, updated,
               entries, instance, renewed)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?7, 1, ?8, ?7)",
        )
        .map_err(db)?
        .execute(params![
            a.id,
            a.kind,
            a.name,
            a.state,
            owner,
            sql_int(a.lease_until_ms),
            sql_int(a.at_ms),
            a.instance
        ])
        .map_err(|e| {
            if is_constraint(&e) {
                StoreError::Conflict(format!("workflow {} exists already", a.id))
            } else {
                db(e)
            }
        })?;
    } else {
        let (rec, held) = tx
            .prepare_cached(SELECT_HELD_WORKFLOW)
            .map_err(db)?
            .query_row([&a.id], |r| Ok((workflow_row(r)?, r.get::<_, String>(9)?)))
            .optional()
            .map_err(db)?
            .ok_or_else(|| StoreError::Conflict(format!("workflow {} does not exist", a.id)))?;
        check_append(&rec, &held, &a.owner, &a.instance, a.seq)?;
        tx.prepare_cached(
            "UPDATE workflows SET state = ?2, owner = ?3, lease_until = ?4, updated = ?5,
             entries = entries + 1, released_by = NULL, instance = ?6, renewed = ?5
             WHERE id = ?1",
        )
        .map_err(db)?
        .execute(params![
            a.id,
            a.state,
            owner,
            sql_int(a.lease_until_ms),
            sql_int(a.at_ms),
            a.instance
        ])
        .map_err(db)?;
    }
    tx.prepare_cached("INSERT INTO journal (workflow, seq, at, event) VALUES (?1, ?2, ?3, ?4)")
        .map_err(db)?
        .execute(params![a.id, sql_int(a.seq), sql_int(a.at_ms), event])
        .map_err(|e| {
            if is_constraint(&e) {
                StoreError::Conflict(format!("workflow {}: entry {} exists", a.id, a.seq))
            } else {
                db(e)
            }
        })?;
    tx.commit().map_err(db)
}

/// `n` numbered parameters from `?first`, comma-separated: the list of an `IN (...)`.
fn placeholders(first: usize, n: usize) -> String {
    (first..first + n)
        .map(|i| format!("?{i}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The claim query for `states` states: the rules of [`Store::claim`] in its `WHERE` clause,
/// the states included, so that SQLite reads only the workflows it may hand out (through the
/// `workflows_kind_state` index) and `LIMIT` counts only those; finished workflows, however
/// many, are never read. Parameters: `?1` kind, `?2` the only id (or NULL), `?3` owner, `?4`
/// now, `?5` limit, `?6` instance, then the states. The text depends only on how many states
/// there are, so the statement cache keeps one statement per count (the engines always pass
/// the same few). The third line is [`stale`](super::stale), the last one
/// [`other_instance`](super::other_instance).
fn claim_query(states: usize) -> String {
    let placeholders = placeholders(7, states);
    format!(
        "SELECT id FROM workflows
         WHERE kind = ?1 AND state IN ({placeholders}) AND (?2 IS NULL OR id = ?2)
           AND ((owner = ?3 AND (?6 = '' OR instance = ?6 OR (renewed < ?4
                  AND ?4 - renewed > max(lease_until - renewed, 0) / 12 * 7)))
                OR lease_until < ?4
                OR (owner IS NULL AND (released_by IS NULL OR released_by <> ?3
                    OR (?6 <> '' AND instance <> '' AND instance <> ?6))))
         ORDER BY rowid LIMIT ?5"
    )
}

fn claim(conn: &mut Connection, c: Claim) -> Result<Vec<String>, StoreError> {
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(db)?;
    let candidates = {
        let mut stmt = tx
            .prepare_cached(&claim_query(c.states.len()))
            .map_err(db)?;
        let (now, limit) = (sql_int(c.now_ms), c.limit.min(i64::MAX as usize) as i64);
        let mut args: Vec<&dyn rusqlite::ToSql> =
            vec![&c.kind, &c.only, &c.owner, &now, &limit, &c.instance];
        args.extend(c.states.iter().map(|s| s as &dyn rusqlite::ToSql));
        let rows = stmt
            .query_map(&args[..], |r| r.get::<_, String>(0))
            .map_err(db)?;
        rows.collect::<Result<Vec<_>, _>>().map_err(db)?
    };
    for id in &candidates {
        tx.prepare_cached(
            "UPDATE workflows SET owner = ?2, lease_until = ?3, released_by = NULL,
             instance = ?4, renewed = ?5 WHERE id = ?1",
        )
        .map_err(db)?
        .execute(params![
            id,
            c.owner,
            sql_int(c.lease_until_ms),
            c.instance,
            sql_int(c.now_ms)
        ])
        .map_err(db)?;
    }
    tx.commit().map_err(db)?;
    Ok(candidates)
}

/// The purge query for `states` states: the rules of [`Store::purge`] in its `WHERE` clause,
/// the states included, as in [`claim_query`]: SQLite reads only the workflows it may
/// delete, through the `workflows_kind_state` index, and `LIMIT` counts only those.
/// Parameters: `?1` kind, `?2` the time before which they were last written, `?3` limit,
/// then the states.
fn purge_query(states: usize) -> String {
    let placeholders = placeholders(4, states);
    format!(
        "SELECT id FROM workflows
         WHERE kind = ?1 AND state IN ({placeholders}) AND owner IS NULL AND updated < ?2
         ORDER BY rowid LIMIT ?3"
    )
}

fn purge(conn: &mut Connection, p: Purge) -> Result<u64, StoreError> {
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(db)?;
    let gone = {
        let mut stmt = tx
            .prepare_cached(&purge_query(p.states.len()))
            .map_err(db)?;
        let (before, limit) = (
            sql_int(p.updated_before_ms),
            p.limit.min(i64::MAX as usize) as i64,
        );
        let mut args: Vec<&dyn rusqlite::ToSql> = vec![&p.kind, &before, &limit];
        args.extend(p.states.iter().map(|s| s as &dyn rusqlite::ToSql));
        let rows = stmt
            .query_map(&args[..], |r| r.get::<_, String>(0))
            .map_err(db)?;
        rows.collect::<Result<Vec<_>, _>>().map_err(db)?
    };
    for id in &gone {
        for delete in [
            "DELETE FROM journal WHERE workflow = ?1",
            "DELETE FROM reviews WHERE workflow = ?1",
            "DELETE FROM workflows WHERE id = ?1",
        ] {
            tx.prepare_cached(delete)
                .map_err(db)?
                .execute([id])
                .map_err(db)?;
        }
    }
    tx.commit().map_err(db)?;
    Ok(gone.len() as u64)
}

fn review_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<(String, String, String, u64, String)> {
    // The time leniently, as a checkpoint's: a damaged one (edited by hand, not an integer)
    // reads as 0 and is this item's, not a reason to fail every listing of the queue.
    Ok((
        r.get(0)?,
        r.get(1)?,
        r.get(2)?,
        lenient_int(r.get_ref(3)?),
        r.get(4)?,
    ))
}

fn review_from(
    (id, workflow_id, status, updated_ms, body): (String, String, String, u64, String),
) -> Result<StoredReview, StoreError> {
    Ok(StoredReview {
        id,
        workflow_id,
        status,
        updated_ms,
        // A body that is not JSON is this item's problem, not the list's: carried as such,
        // for decoding to refuse, naming the item.
        body: json(&body).unwrap_or_else(|e| {
            serde_json::json!({ super::UNREADABLE_BODY: format!("its body is not JSON ({e})") })
        }),
    })
}

impl Store for SqliteStore {
    fn append(&self, a: Append) -> BoxFuture<'_, Result<(), StoreError>> {
        self.run(move |c| append(c, a))
    }

    fn journal<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<Vec<JournalEntry>, StoreError>> {
        let id = id.to_owned();
        self.run(move |c| {
            let mut stmt = c
                .prepare_cached(
                    "SELECT seq, at, event FROM journal WHERE workflow = ?1 ORDER BY seq",
                )
                .map_err(db)?;
            let rows = stmt
                .query_map([id], |r| {
                    Ok((
                        r.get::<_, i64>(0)?,
                        r.get::<_, i64>(1)?,
                        r.get::<_, String>(2)?,
                    ))
                })
                .map_err(db)?;
            let mut out = Vec::new();
            for r in rows {
                let (seq, at, event) = r.map_err(db)?;
                out.push(JournalEntry {
                    seq: from_sql_int(seq),
                    at_ms: from_sql_int(at),
                    event: json(&event)?,
                });
            }
            Ok(out)
        })
    }

    fn workflows<'a>(
        &'a self,
        kind: Option<&'a str>,
    ) -> BoxFuture<'a, Result<Vec<WorkflowRecord>, StoreError>> {
        let kind = kind.map(str::to_owned);
        self.run(move |c| {
            let mut stmt = c
                .prepare_cached(concat!(
                    "SELECT ",
                    workflow_columns!(),
                    " FROM workflows WHERE ?1 IS NULL OR kind = ?1 ORDER BY rowid"
                ))
                .map_err(db)?;
            let rows = stmt.query_map([kind], workflow_row).map_err(db)?;
            rows.collect::<Result<Vec<_>, _>>().map_err(db)
        })
    }

    fn workflow<'a>(
        &'a self,
        id: &'a str,
    ) -> BoxFuture<'a, Result<Option<WorkflowRecord>, StoreError>> {
        let id = id.to_owned();
        self.run(move |c| {
            c.prepare_cached(SELECT_WORKFLOW)
                .map_err(db)?
                .query_row([id], workflow_row)
                .optional()
                .map_err(db)
        })
    }

    fn claim(&self, c: Claim) -> BoxFuture<'_, Result<Vec<String>, StoreError>> {
        self.run(move |conn| claim(conn, c))
    }

    fn renew<'a>(
        &'a self,
        id: &'a str,
        owner: &'a str,
        lease_until_ms: u64,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        self.renew_held(id, owner, "", None, lease_until_ms)
    }

    fn renew_instance<'a>(
        &'a self,
        id: &'a str,
        owner: &'a str,
        instance: &'a str,
        now_ms: u64,
        lease_until_ms: u64,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        self.renew_held(id, owner, instance, Some(now_ms), lease_until_ms)
    }

    fn release<'a>(&'a self, id: &'a str, owner: &'a str) -> BoxFuture<'a, Result<(), StoreError>> {
        self.release_instance(id, owner, "")
    }

    fn release_instance<'a>(
        &'a self,
        id: &'a str,
        owner: &'a str,
        instance: &'a str,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        let (id, owner, instance) = (id.to_owned(), owner.to_owned(), instance.to_owned());
        self.run(move |c| {
            let n = c
                .prepare_cached(
                    "UPDATE workflows SET owner = NULL, released_by = ?2
                     WHERE id = ?1 AND owner = ?2 AND (?3 = '' OR instance = ?3)",
                )
                .map_err(db)?
                .execute(params![id, owner, instance])
                .map_err(db)?;
            if n == 1 {
                Ok(())
            } else {
                Err(lost(&id, &owner))
            }
        })
    }

    fn purge(&self, p: Purge) -> BoxFuture<'_, Result<u64, StoreError>> {
        self.run(move |c| purge(c, p))
    }

    fn review_put(&self, item: StoredReview) -> BoxFuture<'_, Result<(), StoreError>> {
        self.run(move |c| {
            c.execute(
                "INSERT INTO reviews (id, workflow, status, updated, body) VALUES (?1, ?2, ?3, ?4, ?5)
                 ON CONFLICT (id) DO UPDATE SET workflow = excluded.workflow,
                   status = excluded.status, updated = excluded.updated, body = excluded.body",
                params![
                    item.id,
                    item.workflow_id,
                    item.status,
                    sql_int(item.updated_ms),
                    item.body.to_string()
                ],
            )
            .map_err(db)?;
            Ok(())
        })
    }

    fn review_put_if(
        &self,
        expected: Option<StoredReview>,
        item: StoredReview,
    ) -> BoxFuture<'_, Result<bool, StoreError>> {
        self.run(move |c| {
            // `IMMEDIATE`: the write lock is taken before the item is read, so no other
            // connection (another process on the same file) writes it between the comparison
            // and the write.
            let tx = c
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(db)?;
            let stored = tx
                .prepare_cached(
                    "SELECT id, workflow, status, updated, body FROM reviews WHERE id = ?1",
                )
                .map_err(db)?
                .query_row([&item.id], review_row)
                .optional()
                .map_err(db)?
                .map(review_from)
                .transpose()?;
            if stored != expected {
                return Ok(false);
            }
            // Updated in place, so the item keeps its place in the list (its rowid).
            tx.prepare_cached(
                "INSERT INTO reviews (id, workflow, status, updated, body) VALUES (?1, ?2, ?3, ?4, ?5)
                 ON CONFLICT (id) DO UPDATE SET workflow = excluded.workflow,
                   status = excluded.status, updated = excluded.updated, body = excluded.body",
            )
            .map_err(db)?
            .execute(params![
                item.id,
                item.workflow_id,
                item.status,
                sql_int(item.updated_ms),
                item.body.to_string()
            ])
            .map_err(db)?;
            tx.commit().map_err(db)?;
            Ok(true)
        })
    }

    fn review_get<'a>(
        &'a self,
        id: &'a str,
    ) -> BoxFuture<'a, Result<Option<StoredReview>, StoreError>> {
        let id = id.to_owned();
        self.run(move |c| {
            c.query_row(
                "SELECT id, workflow, status, updated, body FROM reviews WHERE id = ?1",
                [id],
                review_row,
            )
            .optional()
            .map_err(db)?
            .map(review_from)
            .transpose()
        })
    }

    fn review_list(&self) -> BoxFuture<'_, Result<Vec<StoredReview>, StoreError>> {
        self.run(|c| {
            let mut stmt = c
                .prepare_cached(
                    "SELECT id, workflow, status, updated, body FROM reviews ORDER BY rowid",
                )
                .map_err(db)?;
            let rows = stmt.query_map([], review_row).map_err(db)?;
            let mut out = Vec::new();
            for r in rows {
                out.push(review_from(r.map_err(db)?)?);
            }
            Ok(out)
        })
    }

    fn checkpoint_put(&self, cp: StoredCheckpoint) -> BoxFuture<'_, Result<(), StoreError>> {
        self.run(move |c| {
            // `IMMEDIATE`, as in `checkpoint_put_next`: no other connection writes between the
            // look for this version or a newer one and the insert.
            let tx = c
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(db)?;
            let newest: Option<i64> = tx
                .prepare_cached(
                    "SELECT max(version) FROM checkpoints
                     WHERE agent = ?1 AND version >= ?2 AND typeof(version) = 'integer'",
                )
                .map_err(db)?
                .query_row(params![cp.agent, sql_int(cp.version)], |r| r.get(0))
                .map_err(db)?;
            if let Some(newest) = newest {
                return Err(checkpoint_conflict(&cp.agent, cp.version, from_sql_int(newest)));
            }
            tx.prepare_cached(
                "INSERT INTO checkpoints (agent, version, at, checksum, data) VALUES (?1, ?2, ?3, ?4, ?5)",
            )
            .map_err(db)?
            .execute(params![cp.agent, sql_int(cp.version), sql_int(cp.at_ms), cp.checksum, cp.data])
            .map_err(|e| {
                if is_constraint(&e) {
                    StoreError::Conflict(format!(
                        "checkpoint {} version {} exists already",
                        cp.agent, cp.version
                    ))
                } else {
                    db(e)
                }
            })?;
            tx.commit().map_err(db)?;
            Ok(())
        })
    }

    fn checkpoint_put_next(&self, cp: StoredCheckpoint) -> BoxFuture<'_, Result<u64, StoreError>> {
        self.run(move |c| {
            // `IMMEDIATE`: the write lock is taken before the newest version is read, so no
            // other connection (another process on the same file) can write that version
            // in between.
            let tx = c
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(db)?;
            let newest: Option<i64> = tx
                .prepare_cached("SELECT max(version) FROM checkpoints WHERE agent = ?1 AND typeof(version) = 'integer'")
                .map_err(db)?
                .query_row([&cp.agent], |r| r.get(0))
                .map_err(db)?;
            let newest = newest.map_or(0, from_sql_int);
            let version = next_checkpoint_version(&cp.agent, newest, i64::MAX as u64)?;
            tx.prepare_cached(
                "INSERT INTO checkpoints (agent, version, at, checksum, data) VALUES (?1, ?2, ?3, ?4, ?5)",
            )
            .map_err(db)?
            .execute(params![cp.agent, sql_int(version), sql_int(cp.at_ms), cp.checksum, cp.data])
            .map_err(db)?;
            tx.commit().map_err(db)?;
            Ok(version)
        })
    }

    fn checkpoint_get<'a>(
        &'a self,
        agent: &'a str,
        version: u64,
    ) -> BoxFuture<'a, Result<Option<StoredCheckpoint>, StoreError>> {
        let agent = agent.to_owned();
        self.run(move |c| {
            c.query_row(
                "SELECT at, checksum, data FROM checkpoints WHERE agent = ?1 AND version = ?2",
                params![agent, sql_int(version)],
                |r| {
                    Ok(StoredCheckpoint {
                        agent: agent.clone(),
                        version,
                        // Leniently too: a damaged time is no reason to fail the load.
                        at_ms: lenient_int(r.get_ref(0)?),
                        // Read whatever the columns hold: a row edited by hand (TEXT where a
                        // BLOB belongs, a NULL) is a corrupt checkpoint, which the checksum
                        // then refuses, so loading falls back to an older version, not a
                        // store error that stops it.
                        checksum: lenient_bytes(r.get_ref(1)?)
                            .map(|b| String::from_utf8_lossy(b).into_owned())
                            .unwrap_or_default(),
                        data: lenient_bytes(r.get_ref(2)?).unwrap_or_default().to_vec(),
                    })
                },
            )
            .optional()
            .map_err(db)
        })
    }

    fn checkpoint_versions<'a>(
        &'a self,
        agent: &'a str,
    ) -> BoxFuture<'a, Result<Vec<CheckpointMeta>, StoreError>> {
        let agent = agent.to_owned();
        self.run(move |c| {
            let mut stmt = c
                .prepare_cached(
                    "SELECT version, at, checksum, length(data) FROM checkpoints
                     WHERE agent = ?1 ORDER BY version DESC",
                )
                .map_err(db)?;
            let rows = stmt
                .query_map([agent], |r| {
                    Ok(CheckpointMeta {
                        // A damaged version lists as 0, which no save writes: reading it
                        // finds nothing, and loading goes on to the next one.
                        version: lenient_int(r.get_ref(0)?),
                        at_ms: lenient_int(r.get_ref(1)?),
                        // Leniently, as `checkpoint_get` reads it: a damaged row is listed,
                        // then refused as corrupt when read.
                        checksum: lenient_bytes(r.get_ref(2)?)
                            .map(|b| String::from_utf8_lossy(b).into_owned())
                            .unwrap_or_default(),
                        len: from_sql_int(r.get::<_, Option<i64>>(3)?.unwrap_or(0)),
                    })
                })
                .map_err(db)?;
            rows.collect::<Result<Vec<_>, _>>().map_err(db)
        })
    }

    fn checkpoint_prune<'a>(
        &'a self,
        agent: &'a str,
        keep: usize,
    ) -> BoxFuture<'a, Result<u64, StoreError>> {
        let agent = agent.to_owned();
        self.run(move |c| {
            let n = c
                .execute(
                    // Only integer versions count as the newest: a damaged one (TEXT sorts
                    // after every integer) would be kept in place of the save just made. A
                    // damaged row, which no load can read, goes with the old ones.
                    "DELETE FROM checkpoints WHERE agent = ?1 AND version NOT IN
                     (SELECT version FROM checkpoints WHERE agent = ?1 AND typeof(version) = 'integer'
                      ORDER BY version DESC LIMIT ?2)",
                    params![agent, keep.min(i64::MAX as usize) as i64],
                )
                .map_err(db)?;
            Ok(n as u64)
        })
    }
}

/// An INTEGER column as a `u64` (a negative one as 0, as [`from_sql_int`]); 0 for any other
/// type (TEXT, a NULL, a REAL: a row edited by hand).
fn lenient_int(value: rusqlite::types::ValueRef<'_>) -> u64 {
    match value {
        rusqlite::types::ValueRef::Integer(n) => from_sql_int(n),
        _ => 0,
    }
}

/// The bytes of a TEXT or BLOB column; `None` for any other type (NULL, a number).
fn lenient_bytes(value: rusqlite::types::ValueRef<'_>) -> Option<&[u8]> {
    match value {
        rusqlite::types::ValueRef::Blob(b) | rusqlite::types::ValueRef::Text(b) => Some(b),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pragma(store: &SqliteStore, name: &str) -> String {
        let conn = store.conn.lock().unwrap();
        conn.query_row(&format!("PRAGMA {name}"), [], |r| {
            r.get::<_, rusqlite::types::Value>(0)
        })
        .map(|v| match v {
            rusqlite::types::Value::Integer(i) => i.to_string(),
            rusqlite::types::Value::Text(t) => t,
            other => format!("{other:?}"),
        })
        .unwrap()
    }

    /// A newest checkpoint row edited by hand (TEXT in the BLOB column, a BLOB checksum) is a
    /// corrupt version: loading falls back to the newest good one instead of failing.
    #[tokio::test]
    async fn a_damaged_checkpoint_row_falls_back_to_an_older_version() {
        use crate::checkpoint::Checkpoints;
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(SqliteStore::open(dir.path().join("cp.db")).unwrap());
        let cps = Checkpoints::new(store.clone());
        for n in 1..=4 {
            cps.save("agent", &n).await.unwrap();
        }
        {
            let conn = store.conn.lock().unwrap();
            conn.execute(
                "UPDATE checkpoints SET data = 'garbage' WHERE agent = 'agent' AND version = 4",
                [],
            )
            .unwrap();
            conn.execute(
                "UPDATE checkpoints SET checksum = X'00FF' WHERE agent = 'agent' AND version = 3",
                [],
            )
            .unwrap();
        }
        let loaded = cps.load_latest::<u32>("agent").await.unwrap();
        assert_eq!((loaded.version, loaded.state), (2, 2));
        assert_eq!(loaded.corrupt.len(), 2, "{:?}", loaded.corrupt);
    }

    /// A checkpoint row whose `at` (or `version`) column was damaged (not an integer) is read
    /// as it can be, as the data and checksum columns are: it is listed (saved at 0), and
    /// loading and listing do not fail on it.
    #[tokio::test]
    async fn a_damaged_checkpoint_time_does_not_fail_the_load() {
        use crate::checkpoint::Checkpoints;
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(SqliteStore::open(dir.path().join("cp.db")).unwrap());
        let cps = Checkpoints::new(store.clone());
        for n in 1..=3u32 {
            cps.save("agent", &n).await.unwrap();
        }
        {
            let conn = store.conn.lock().unwrap();
            conn.execute(
                "UPDATE checkpoints SET at = 'garbage' WHERE agent = 'agent' AND version = 3",
                [],
            )
            .unwrap();
        }
        let versions = cps.versions("agent").await.unwrap();
        assert_eq!(
            versions
                .iter()
                .map(|m| (m.version, m.at_ms == 0))
                .collect::<Vec<_>>(),
            [(3, true), (2, false), (1, false)]
        );
        let loaded = cps.load_latest::<u32>("agent").await.unwrap();
        assert_eq!((loaded.version, loaded.state, loaded.at_ms), (3, 3, 0));
        assert!(loaded.corrupt.is_empty());
        // A damaged version number: the row is listed under 0, which no save writes, and
        // loading goes on to the good versions.
        store
            .conn
            .lock()
            .unwrap()
            .execute(
                "UPDATE checkpoints SET version = 'x' WHERE agent = 'agent' AND version = 3",
                [],
            )
            .unwrap();
        let versions = cps.versions("agent").await.unwrap();
        assert_eq!(versions.len(), 3);
        let loaded = cps.load_latest::<u32>("agent").await.unwrap();
        assert_eq!((loaded.version, loaded.state), (2, 2));
    }

    /// A checkpoint row whose version was damaged (TEXT, listed as 0) is not the newest to
    /// prune around: with `keep_last(1)`, a save after it must keep the version it saved.
    #[tokio::test(start_paused = true)]
    async fn a_damaged_version_row_does_not_make_pruning_delete_the_new_save() {
        use crate::checkpoint::Checkpoints;
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(SqliteStore::open(dir.path().join("cp.db")).unwrap());
        let cps = Checkpoints::new(store.clone()).keep_last(1).unwrap();
        for n in 1..=3u32 {
            cps.save("agent", &n).await.unwrap();
        }
        store
            .conn
            .lock()
            .unwrap()
            .execute(
                "UPDATE checkpoints SET version = 'x' WHERE agent = 'agent' AND version = 3",
                [],
            )
            .unwrap();
        let saved = cps.save("agent", &4u32).await.unwrap();
        let versions: Vec<u64> = cps
            .versions("agent")
            .await
            .unwrap()
            .iter()
            .map(|m| m.version)
            .collect();
        let loaded = cps.load_latest::<u32>("agent").await;
        assert!(
            matches!(&loaded, Ok(l) if (l.version, l.state) == (saved.version, 4)),
            "saved version {} is gone: versions listed {versions:?}, load_latest {loaded:?}",
            saved.version
        );
    }

    #[test]
    fn options_reach_the_connection() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("default.db");
        let store = SqliteStore::open(&path).unwrap();
        assert_eq!(store.path(), path);
        assert_eq!(pragma(&store, "journal_mode"), "wal");
        assert_eq!(pragma(&store, "synchronous"), "2", "FULL");
        assert_eq!(pragma(&store, "busy_timeout"), "5000");

        let options = SqliteOptions::default()
            .durable(false)
            .busy_timeout(Duration::from_millis(250));
        assert_eq!(
            (options.durable, options.busy_timeout),
            (false, Duration::from_millis(250))
        );
        let store = SqliteStore::open_with(dir.path().join("fast.db"), options).unwrap();
        assert_eq!(pragma(&store, "journal_mode"), "wal");
        assert_eq!(pragma(&store, "synchronous"), "1", "NORMAL");
        assert_eq!(pragma(&store, "busy_timeout"), "250");
    }

    /// A file that cannot be opened as a store is an [`StoreError::Open`] naming it and why,
    /// with SQLite's error as the source; the file is left as it was.
    #[test]
    fn a_file_that_cannot_be_opened_is_named() {
        use std::error::Error as _;
        let dir = tempfile::tempdir().unwrap();
        let garbage = dir.path().join("garbage.db");
        let text = b"not a database, just text; ".repeat(40);
        std::fs::write(&garbage, &text).unwrap();
        let missing = dir.path().join("no").join("such.db");
        for (path, why) in [
            (&garbage, "file is not a database"),
            (&missing, "unable to open database file"),
        ] {
            let err = SqliteStore::open(path).unwrap_err();
            let StoreError::Open { path: named, .. } = &err else {
                panic!("{err:?}");
            };
            assert_eq!(named, path);
            let want = format!("cannot open the store at {}: {why}", path.display());
            assert!(err.to_string().starts_with(&want), "{err}");
            let source = err.source().unwrap();
            assert!(
                source.downcast_ref::<rusqlite::Error>().is_some(),
                "{source:?}"
            );
        }
        assert_eq!(std::fs::read(&garbage).unwrap(), text);
        assert!(!missing.exists());
    }

    /// A busy timeout SQLite cannot take (it counts milliseconds in a 32-bit integer; rusqlite
    /// panicked on one beyond that) is refused with the field and the rule, and no file is
    /// created; the longest accepted one reaches the connection.
    #[test]
    fn an_absurd_busy_timeout_is_refused_not_a_panic() {
        let dir = tempfile::tempdir().unwrap();
        for absurd in [
            MAX_BUSY_TIMEOUT + Duration::from_millis(1),
            Duration::from_secs(30 * 24 * 60 * 60),
            Duration::MAX,
        ] {
            let path = dir.path().join("absurd.db");
            let r = SqliteStore::open_with(&path, SqliteOptions::default().busy_timeout(absurd));
            match r {
                Err(StoreError::Config(e)) => {
                    assert_eq!(
                        (e.field(), e.rule()),
                        ("busy_timeout", "must be at most 1 hour")
                    );
                }
                other => panic!("{absurd:?}: {other:?}"),
            }
            assert!(!path.exists(), "{absurd:?}");
        }
        let options = SqliteOptions::default().busy_timeout(MAX_BUSY_TIMEOUT);
        let store = SqliteStore::open_with(dir.path().join("patient.db"), options).unwrap();
        assert_eq!(pragma(&store, "busy_timeout"), "3600000");
    }

    /// The query plan of a claim for `states` states, one line per step.
    fn claim_plan(store: &SqliteStore, states: usize) -> Vec<String> {
        plan(store, &claim_query(states))
    }

    /// The query plan of `sql`, one line per step.
    fn plan(store: &SqliteStore, sql: &str) -> Vec<String> {
        let conn = store.conn.lock().unwrap();
        let mut stmt = conn.prepare(&format!("EXPLAIN QUERY PLAN {sql}")).unwrap();
        let nulls = vec![rusqlite::types::Null; stmt.parameter_count()];
        stmt.query_map(rusqlite::params_from_iter(nulls), |r| r.get::<_, String>(3))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap()
    }

    /// A store on a new file and one on a file made by the first version's schema, in `dir`.
    fn fresh_and_first_version(dir: &Path) -> [SqliteStore; 2] {
        let fresh = SqliteStore::open(dir.join("fresh.db")).unwrap();
        let path = dir.join("old.db");
        Connection::open(&path)
            .unwrap()
            .execute_batch(SCHEMA)
            .unwrap();
        [fresh, SqliteStore::open(&path).unwrap()]
    }

    /// A claim looks workflows up by kind and state through the index: it never reads the
    /// finished ones (however many a store keeps), on a new file and on one made by the first
    /// version (which had the index already).
    #[test]
    fn a_claim_reads_only_workflows_in_the_claimed_states() {
        let dir = tempfile::tempdir().unwrap();
        for store in &fresh_and_first_version(dir.path()) {
            for states in [1, 2, 5] {
                let plan = claim_plan(store, states);
                assert!(
                    plan.iter().any(|step| step
                        == "SEARCH workflows USING INDEX workflows_kind_state (kind=? AND state=?)"),
                    "{states} states: {plan:?}"
                );
            }
        }
    }

    /// A purge looks workflows up by kind and state through the index (it never reads the
    /// running ones, however many), and deletes each one's review items through the
    /// `reviews_workflow` index, not by reading every item; on a new file and on one made by
    /// the first version (which lacked that index: opening adds it).
    #[test]
    fn a_purge_reads_only_what_it_deletes() {
        let dir = tempfile::tempdir().unwrap();
        for store in &fresh_and_first_version(dir.path()) {
            for states in [1, 3] {
                let plan = plan(store, &purge_query(states));
                assert!(
                    plan.iter().any(|step| step
                        == "SEARCH workflows USING INDEX workflows_kind_state (kind=? AND state=?)"),
                    "{states} states: {plan:?}"
                );
            }
            assert_eq!(
                plan(store, "DELETE FROM reviews WHERE workflow = ?1"),
                ["SEARCH reviews USING INDEX reviews_workflow (workflow=?)"]
            );
        }
    }

    fn has_column(path: &Path, column: &str) -> bool {
        let c = Connection::open(path).unwrap();
        c.query_row(
            "SELECT count(*) FROM pragma_table_info('workflows') WHERE name = ?1",
            [column],
            |r| r.get::<_, i64>(0),
        )
        .unwrap()
            == 1
    }

    /// A file made by the first version (no `released_by`, `instance` nor `renewed` column,
    /// claimed workflows in it): opening it adds the columns and keeps the rows, which read
    /// as never released, held by no instance in particular, renewed at an unknown time;
    /// release, claims (by owner and by instance) and appends then work; opening it again
    /// finds nothing to add.
    #[tokio::test(start_paused = true)]
    async fn a_file_of_the_previous_version_gets_the_new_column() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("old.db");
        {
            let old = Connection::open(&path).unwrap();
            old.execute_batch(SCHEMA).unwrap();
            old.execute_batch(
                "INSERT INTO workflows (id, kind, name, state, owner, lease_until, created,
                   updated, entries) VALUES ('w', 'saga', 'd', 'running', 'a', 10000, 1, 1, 1),
                   ('v', 'saga', 'd', 'compensating', 'a', 10000, 1, 1, 1);
                 INSERT INTO journal (workflow, seq, at, event)
                   VALUES ('w', 0, 1, '{}'), ('v', 0, 1, '{}')",
            )
            .unwrap();
        }
        let columns = || ["released_by", "instance", "renewed"].map(|c| has_column(&path, c));
        assert_eq!(columns(), [false; 3]);
        let store = SqliteStore::open(&path).unwrap();
        assert_eq!(columns(), [true; 3]);
        let w = store.workflow("w").await.unwrap().unwrap();
        assert_eq!((w.owner.as_deref(), w.entries), (Some("a"), 1));
        crate::store::release_hands_w_from_a_to_b(&store).await;
        crate::store::an_old_claim_waits_its_lease_for_an_instance(&store).await;
        drop(store);
        let store = SqliteStore::open(&path).unwrap();
        assert_eq!(columns(), [true; 3]);
        let w = store.workflow("w").await.unwrap().unwrap();
        assert_eq!((w.owner.as_deref(), w.lease_until_ms), (Some("b"), 6));
        assert_eq!(store.journal("w").await.unwrap().len(), 1);
    }

    /// A write that fails for another reason than a duplicate (here: another connection holds
    /// the write lock and the store does not wait) is a backend error, not a conflict: a
    /// conflict would tell the caller that someone else wrote that checkpoint.
    #[tokio::test(start_paused = true)]
    async fn a_locked_file_is_a_backend_failure_not_a_conflict() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("journal.db");
        let store =
            SqliteStore::open_with(&path, SqliteOptions::default().busy_timeout(Duration::ZERO))
                .unwrap();
        let cp = |version| StoredCheckpoint {
            agent: "crawler".into(),
            version,
            at_ms: 1,
            checksum: "c".into(),
            data: vec![1],
        };
        store.checkpoint_put(cp(1)).await.unwrap();
        let other = Connection::open(&path).unwrap();
        other.execute_batch("BEGIN IMMEDIATE").unwrap();
        let err = store.checkpoint_put(cp(2)).await.unwrap_err();
        assert!(matches!(err, StoreError::Backend(_)), "{err:?}");
        other.execute_batch("ROLLBACK").unwrap();
        // The same write once the lock is gone, and a real duplicate.
        store.checkpoint_put(cp(2)).await.unwrap();
        let err = store.checkpoint_put(cp(2)).await.unwrap_err();
        assert!(matches!(err, StoreError::Conflict(_)), "{err:?}");
    }
}
