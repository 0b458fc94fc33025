//! The networked store: PostgreSQL, for several processes sharing one journal.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::sync::{Mutex, MutexGuard};
use tokio_postgres::error::SqlState;
use tokio_postgres::{Client, NoTls, Row};

use super::memory::{check_append, lost};
use super::{
    Append, BoxFuture, CheckpointMeta, Claim, JournalEntry, Purge, Store, StoredCheckpoint,
    StoredReview, WorkflowRecord, checkpoint_conflict, next_checkpoint_version,
};
use super::{from_sql_int, sql_int};
use crate::error::StoreError;

/// A store in a PostgreSQL database (feature `postgres`), for fleets: any number of processes,
/// on any number of machines, share one journal, one review queue and one set of checkpoints.
///
/// Claims are taken with `SELECT ... FOR UPDATE SKIP LOCKED` inside a transaction, so two
/// processes claiming at the same moment never get the same workflow and never wait for each
/// other; every append locks its workflow's row (`FOR UPDATE`) and checks the claim and the
/// sequence number in the same transaction as the insert, so a process whose lease was taken
/// over cannot write another entry.
///
/// # Connections
///
/// The store opens a few connections (4 by default, [`connect_with`](PostgresStore::connect_with))
/// and spreads operations over them; each transaction holds one connection. As tokio-postgres
/// requires, each connection is driven by a task the store spawns on the current runtime when
/// it connects; the task ends when the store is dropped. A connection whose session the
/// server ended (a restart, a failover) is made again when it is next used: the operation in
/// flight then fails, the store goes on once the database is back. Connections are made
/// without TLS: use a local socket, a loopback address or a private network.
///
/// # Schema
///
/// Tables are created on connect if missing, in the schema named in
/// [`connect_with`](PostgresStore::connect_with) (created too) or in the connection's default
/// schema. Creation takes an advisory lock, so processes starting together do not race.
///
/// Journal entries and review items are `json` columns, not `jsonb`: `jsonb` refuses a string
/// holding a NUL character (`\u0000`), which a step's output or an error message may well
/// hold (text from a crawled page, a PDF), and an entry the journal refuses is a step whose
/// outcome cannot be recorded. The store never queries inside them, so it loses nothing by
/// it. A database created with `jsonb` columns by an earlier version is converted on connect
/// (once; it rewrites those two tables), and one created without the `released_by` column of
/// [`Store::release`] gets it added (the earlier version's rows read as never released), one
/// without the `instance` and `renewed` columns (a claim's engine instance and renewal time,
/// see [`Store::claim`]) gets them (the earlier version's rows read as held by the empty
/// instance, renewed at an unknown time: another instance of their owner waits for their
/// lease to end, as another owner does), and one without the `reviews_workflow` index
/// (review items by workflow, for [`Store::purge`]) gets that.
pub struct PostgresStore {
    conns: Vec<Mutex<Client>>,
    next: AtomicUsize,
    schema: Option<String>,
    /// To connect again when the server ends a session (never shown: it may hold a password).
    url: String,
}

impl fmt::Debug for PostgresStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PostgresStore")
            .field("connections", &self.conns.len())
            .field("schema", &self.schema)
            .finish()
    }
}

fn pg(e: tokio_postgres::Error) -> StoreError {
    StoreError::backend(e)
}

fn conflict_or(e: tokio_postgres::Error, what: impl FnOnce() -> String) -> StoreError {
    if e.code() == Some(&SqlState::UNIQUE_VIOLATION) {
        StoreError::Conflict(what())
    } else {
        pg(e)
    }
}

/// The tables as the first version made them; [`ADD_COLUMNS`] adds the columns and indexes
/// added since.
const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS workflows (
    id TEXT PRIMARY KEY, kind TEXT NOT NULL, name TEXT NOT NULL, state TEXT NOT NULL,
    owner TEXT, lease_until BIGINT NOT NULL, created BIGINT NOT NULL, updated BIGINT NOT NULL,
    entries BIGINT NOT NULL, ord BIGSERIAL);
CREATE INDEX IF NOT EXISTS workflows_kind_state ON workflows (kind, state, ord);
CREATE TABLE IF NOT EXISTS journal (
    workflow TEXT NOT NULL, seq BIGINT NOT NULL, at BIGINT NOT NULL, event JSON NOT NULL,
    PRIMARY KEY (workflow, seq));
CREATE TABLE IF NOT EXISTS reviews (
    id TEXT PRIMARY KEY, workflow TEXT NOT NULL, status TEXT NOT NULL, updated BIGINT NOT NULL,
    body JSON NOT NULL, ord BIGSERIAL);
CREATE TABLE IF NOT EXISTS checkpoints (
    agent TEXT NOT NULL, version BIGINT NOT NULL, at BIGINT NOT NULL, checksum TEXT NOT NULL,
    data BYTEA NOT NULL, PRIMARY KEY (agent, version));
";

/// Converts the `jsonb` columns of a database created by an earlier version to `json` (see
/// *Schema* on [`PostgresStore`]); once done, it finds nothing to convert.
const MIGRATE: &str = "
DO $$
DECLARE c RECORD;
BEGIN
    FOR c IN SELECT table_name, column_name FROM information_schema.columns
             WHERE table_schema = current_schema() AND data_type = 'jsonb'
               AND (table_name, column_name) IN (('journal', 'event'), ('reviews', 'body'))
    LOOP
        EXECUTE format('ALTER TABLE %I ALTER COLUMN %I TYPE json', c.table_name, c.column_name);
    END LOOP;
END $$;
";

/// The columns and indexes added since the first version, for databases it created (and
/// fresh ones: [`SCHEMA`] is the first version's): `released_by` for [`Store::release`],
/// `instance` and `renewed` for claims by engine instance ([`Store::claim`]), and
/// `reviews_workflow`, through which a [`purge`](Store::purge) deletes the review items of
/// the workflows it deletes. Checked first: `ALTER TABLE` and `CREATE INDEX` lock the table
/// even when they have nothing to do, and every process runs this on connect.
const ADD_COLUMNS: &str = "
DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM information_schema.columns
                   WHERE table_schema = current_schema() AND table_name = 'workflows'
                     AND column_name = 'released_by') THEN
        ALTER TABLE workflows ADD COLUMN released_by TEXT;
    END IF;
    IF NOT EXISTS (SELECT 1 FROM information_schema.columns
                   WHERE table_schema = current_schema() AND table_name = 'workflows'
                     AND column_name = 'instance') THEN
        ALTER TABLE workflows ADD COLUMN instance TEXT NOT NULL DEFAULT '',
                              ADD COLUMN renewed BIGINT;
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_indexes
                   WHERE schemaname = current_schema() AND indexname = 'reviews_workflow') THEN
        CREATE INDEX reviews_workflow ON reviews (workflow);
    END IF;
END $$;
";

const WORKFLOW_COLUMNS: &str =
    "id, kind, name, state, owner, lease_until, created, updated, entries";

/// The transaction-scoped advisory lock on one agent's checkpoints (`$1`, in this schema),
/// taken by every write of a version, so that allocating the next one (read the newest,
/// insert one more) is not raced by a write of an exact version.
const CHECKPOINT_LOCK: &str =
    "SELECT pg_advisory_xact_lock(7317002, hashtext(current_schema() || '/' || $1::TEXT))";

fn workflow_row(r: &Row) -> WorkflowRecord {
    WorkflowRecord {
        id: r.get(0),
        kind: r.get(1),
        name: r.get(2),
        state: r.get(3),
        owner: r.get(4),
        lease_until_ms: from_sql_int(r.get(5)),
        created_ms: from_sql_int(r.get(6)),
        updated_ms: from_sql_int(r.get(7)),
        entries: from_sql_int(r.get(8)),
    }
}

/// JSON column `i` of `r`: what does not decode (a value nested deeper than `serde_json`
/// reads) is [`StoreError::Corrupt`], as in the other stores, not a panic.
fn json_column(r: &Row, i: usize) -> Result<serde_json::Value, StoreError> {
    r.try_get(i).map_err(|e| {
        StoreError::Corrupt(match std::error::Error::source(&e) {
            Some(cause) => format!("{e}: {cause}"),
            None => e.to_string(),
        })
    })
}

fn review_row(r: &Row) -> Result<StoredReview, StoreError> {
    Ok(StoredReview {
        id: r.get(0),
        workflow_id: r.get(1),
        status: r.get(2),
        updated_ms: from_sql_int(r.get(3)),
        body: json_column(r, 4)?,
    })
}

fn valid_schema(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        && !s.starts_with(|c: char| c.is_ascii_digit())
}

/// One connection to `url`, driven by a spawned task, with its search path set to `schema`
/// (created if missing).
async fn open(url: &str, schema: Option<&str>) -> Result<Client, StoreError> {
    let (client, connection) = tokio_postgres::connect(url, NoTls).await.map_err(pg)?;
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::warn!(error = %e, "PostgreSQL connection ended");
        }
    });
    if let Some(s) = schema {
        client
            .batch_execute(&format!(
                "CREATE SCHEMA IF NOT EXISTS {s}; SET search_path TO {s}"
            ))
            .await
            .or_else(|e| {
                // Two connections creating the schema at once.
                if e.code() == Some(&SqlState::UNIQUE_VIOLATION) {
                    Ok(())
                } else {
                    Err(e)
                }
            })
            .map_err(pg)?;
        client
            .batch_execute(&format!("SET search_path TO {s}"))
            .await
            .map_err(pg)?;
    }
    Ok(client)
}

impl PostgresStore {
    /// Connects to `url` (`postgres://user@host:port/db`) with 4 connections, tables in the
    /// default schema.
    pub async fn connect(url: &str) -> Result<Arc<Self>, StoreError> {
        Self::connect_with(url, None, 4).await
    }

    /// Connects to `url` with `connections` connections (at least 1), tables in `schema` if
    /// given: lower-case ASCII letters, digits and `_`, not starting with a digit, at most 63
    /// bytes (anything else is a [`StoreError::Backend`] naming the rule).
    pub async fn connect_with(
        url: &str,
        schema: Option<&str>,
        connections: usize,
    ) -> Result<Arc<Self>, StoreError> {
        if let Some(s) = schema
            && !valid_schema(s)
        {
            return Err(StoreError::backend(format!(
                "invalid schema name {s:?}: use at most 63 lower-case letters, digits and _, not starting with a digit"
            )));
        }
        let mut conns = Vec::new();
        for _ in 0..connections.max(1) {
            conns.push(Mutex::new(open(url, schema).await?));
        }
        {
            let mut c = conns[0].lock().await;
            let tx = c.transaction().await.map_err(pg)?;
            tx.execute("SELECT pg_advisory_xact_lock(7317001)", &[])
                .await
                .map_err(pg)?;
            tx.batch_execute(SCHEMA).await.map_err(pg)?;
            tx.batch_execute(MIGRATE).await.map_err(pg)?;
            tx.batch_execute(ADD_COLUMNS).await.map_err(pg)?;
            tx.commit().await.map_err(pg)?;
        }
        Ok(Arc::new(PostgresStore {
            conns,
            next: AtomicUsize::new(0),
            schema: schema.map(str::to_owned),
            url: url.to_owned(),
        }))
    }

    /// The next connection, made again first if the server ended its session (a restart, a
    /// failover): without it, every operation on that connection would fail for good. The
    /// operation that was on the wire when the session ended fails; later ones go through
    /// once the database is back.
    async fn conn(&self) -> Result<MutexGuard<'_, Client>, StoreError> {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        let mut c = self.conns[n % self.conns.len()].lock().await;
        if c.is_closed() {
            tracing::warn!("PostgreSQL connection was closed; connecting again");
            *c = open(&self.url, self.schema.as_deref()).await?;
        }
        Ok(c)
    }

    async fn append_tx(&self, a: Append) -> Result<(), StoreError> {
        let mut c = self.conn().await?;
        let tx = c.transaction().await.map_err(pg)?;
        let owner = (!a.release).then_some(a.owner.as_str());
        if a.seq == 0 {
            let n = tx
                .execute(
                    "INSERT INTO workflows (id, kind, name, state, owner, lease_until, created, updated,
                       entries, instance, renewed)
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $7, 1, $8, $7) ON CONFLICT (id) DO NOTHING",
                    &[&a.id, &a.kind, &a.name, &a.state, &owner, &sql_int(a.lease_until_ms), &sql_int(a.at_ms), &a.instance],
                )
                .await
                .map_err(pg)?;
            if n == 0 {
                return Err(StoreError::Conflict(format!(
                    "workflow {} exists already",
                    a.id
                )));
            }
        } else {
            let row = tx
                .query_opt(
                    &format!(
                        "SELECT {WORKFLOW_COLUMNS}, instance FROM workflows WHERE id = $1 FOR UPDATE"
                    ),
                    &[&a.id],
                )
                .await
                .map_err(pg)?
                .ok_or_else(|| StoreError::Conflict(format!("workflow {} does not exist", a.id)))?;
            let held: String = row.get(9);
            check_append(&workflow_row(&row), &held, &a.owner, &a.instance, a.seq)?;
            tx.execute(
                "UPDATE workflows SET state = $2, owner = $3, lease_until = $4, updated = $5,
                 entries = entries + 1, released_by = NULL, instance = $6, renewed = $5
                 WHERE id = $1",
                &[
                    &a.id,
                    &a.state,
                    &owner,
                    &sql_int(a.lease_until_ms),
                    &sql_int(a.at_ms),
                    &a.instance,
                ],
            )
            .await
            .map_err(pg)?;
        }
        tx.execute(
            "INSERT INTO journal (workflow, seq, at, event) VALUES ($1, $2, $3, $4)",
            &[&a.id, &sql_int(a.seq), &sql_int(a.at_ms), &a.event],
        )
        .await
        .map_err(|e| conflict_or(e, || format!("workflow {}: entry {} exists", a.id, a.seq)))?;
        tx.commit().await.map_err(pg)
    }

    /// [`Store::checkpoint_put_next`]: the newest version is read and the next inserted in one
    /// transaction, under an advisory lock on the agent (in this schema, [`CHECKPOINT_LOCK`])
    /// that every write of the agent's checkpoints takes too (`checkpoint_put` as well), so that no other writer, in this process or another, takes that version
    /// in between. (A unique index alone would make concurrent saves fail, not wait.)
    async fn checkpoint_put_next_tx(&self, cp: StoredCheckpoint) -> Result<u64, StoreError> {
        let mut c = self.conn().await?;
        let tx = c.transaction().await.map_err(pg)?;
        tx.execute(CHECKPOINT_LOCK, &[&cp.agent])
            .await
            .map_err(pg)?;
        let newest: Option<i64> = tx
            .query_one(
                "SELECT max(version) FROM checkpoints WHERE agent = $1",
                &[&cp.agent],
            )
            .await
            .map_err(pg)?
            .get(0);
        let newest = newest.map_or(0, from_sql_int);
        let version = next_checkpoint_version(&cp.agent, newest, i64::MAX as u64)?;
        tx.execute(
            "INSERT INTO checkpoints (agent, version, at, checksum, data) VALUES ($1, $2, $3, $4, $5)",
            &[&cp.agent, &sql_int(version), &sql_int(cp.at_ms), &cp.checksum, &cp.data],
        )
        .await
        .map_err(pg)?;
        tx.commit().await.map_err(pg)?;
        Ok(version)
    }

    /// [`Store::renew_instance`]; with `now_ms` `None` ([`Store::renew`]), the renewal time
    /// becomes unknown.
    async fn renew_held(
        &self,
        id: &str,
        owner: &str,
        instance: &str,
        now_ms: Option<u64>,
        lease_until_ms: u64,
    ) -> Result<(), StoreError> {
        let c = self.conn().await?;
        let now = now_ms.map(sql_int);
        let n = c
            .execute(
                "UPDATE workflows SET lease_until = GREATEST(lease_until, $3),
                   renewed = CASE WHEN $5::BIGINT IS NULL THEN NULL
                                  ELSE GREATEST(renewed, $5) END
                 WHERE id = $1 AND owner = $2 AND ($4::TEXT = '' OR instance = $4)",
                &[&id, &owner, &sql_int(lease_until_ms), &instance, &now],
            )
            .await
            .map_err(pg)?;
        if n == 1 { Ok(()) } else { Err(lost(id, owner)) }
    }

    async fn claim_tx(&self, c: Claim) -> Result<Vec<String>, StoreError> {
        let mut conn = self.conn().await?;
        let tx = conn.transaction().await.map_err(pg)?;
        let rows = tx
            .query(
                "SELECT id FROM workflows
                 WHERE kind = $1 AND state = ANY($2) AND ($3::TEXT IS NULL OR id = $3)
                   AND ((owner = $4 AND ($7::TEXT = '' OR instance = $7 OR (renewed < $5
                          AND $5 - renewed > GREATEST(lease_until - renewed, 0) / 12 * 7)))
                        OR lease_until < $5
                        OR (owner IS NULL AND (released_by IS NULL OR released_by <> $4
                            OR ($7::TEXT <> '' AND instance <> '' AND instance <> $7))))
                 ORDER BY ord LIMIT $6 FOR UPDATE SKIP LOCKED",
                &[
                    &c.kind,
                    &c.states,
                    &c.only,
                    &c.owner,
                    &sql_int(c.now_ms),
                    &(c.limit.min(i64::MAX as usize) as i64),
                    &c.instance,
                ],
            )
            .await
            .map_err(pg)?;
        let ids: Vec<String> = rows.iter().map(|r| r.get(0)).collect();
        if !ids.is_empty() {
            tx.execute(
                "UPDATE workflows SET owner = $2, lease_until = $3, released_by = NULL,
                 instance = $4, renewed = $5 WHERE id = ANY($1)",
                &[
                    &ids,
                    &c.owner,
                    &sql_int(c.lease_until_ms),
                    &c.instance,
                    &sql_int(c.now_ms),
                ],
            )
            .await
            .map_err(pg)?;
        }
        tx.commit().await.map_err(pg)?;
        Ok(ids)
    }

    async fn purge_tx(&self, p: Purge) -> Result<u64, StoreError> {
        let mut conn = self.conn().await?;
        let tx = conn.transaction().await.map_err(pg)?;
        // The rows are locked as they are chosen: one a claim or an append holds is skipped,
        // and one chosen cannot be claimed or appended to before it is gone.
        let rows = tx
            .query(
                "DELETE FROM workflows WHERE id IN (
                     SELECT id FROM workflows
                     WHERE kind = $1 AND state = ANY($2) AND owner IS NULL AND updated < $3
                     ORDER BY ord LIMIT $4 FOR UPDATE SKIP LOCKED)
                 RETURNING id",
                &[
                    &p.kind,
                    &p.states,
                    &sql_int(p.updated_before_ms),
                    &(p.limit.min(i64::MAX as usize) as i64),
                ],
            )
            .await
            .map_err(pg)?;
        let ids: Vec<String> = rows.iter().map(|r| r.get(0)).collect();
        if !ids.is_empty() {
            tx.execute("DELETE FROM journal WHERE workflow = ANY($1)", &[&ids])
                .await
                .map_err(pg)?;
            tx.execute("DELETE FROM reviews WHERE workflow = ANY($1)", &[&ids])
                .await
                .map_err(pg)?;
        }
        tx.commit().await.map_err(pg)?;
        Ok(ids.len() as u64)
    }
}

impl Store for PostgresStore {
    fn append(&self, append: Append) -> BoxFuture<'_, Result<(), StoreError>> {
        Box::pin(self.append_tx(append))
    }

    fn journal<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<Vec<JournalEntry>, StoreError>> {
        Box::pin(async move {
            let c = self.conn().await?;
            let rows = c
                .query(
                    "SELECT seq, at, event FROM journal WHERE workflow = $1 ORDER BY seq",
                    &[&id],
                )
                .await
                .map_err(pg)?;
            rows.iter()
                .map(|r| {
                    Ok(JournalEntry {
                        seq: from_sql_int(r.get(0)),
                        at_ms: from_sql_int(r.get(1)),
                        event: json_column(r, 2)?,
                    })
                })
                .collect()
        })
    }

    fn workflows<'a>(
        &'a self,
        kind: Option<&'a str>,
    ) -> BoxFuture<'a, Result<Vec<WorkflowRecord>, StoreError>> {
        Box::pin(async move {
            let c = self.conn().await?;
            let rows = c
                .query(
                    &format!(
                        "SELECT {WORKFLOW_COLUMNS} FROM workflows WHERE $1::TEXT IS NULL OR kind = $1
                         ORDER BY ord"
                    ),
                    &[&kind],
                )
                .await
                .map_err(pg)?;
            Ok(rows.iter().map(workflow_row).collect())
        })
    }

    fn workflow<'a>(
        &'a self,
        id: &'a str,
    ) -> BoxFuture<'a, Result<Option<WorkflowRecord>, StoreError>> {
        Box::pin(async move {
            let c = self.conn().await?;
            let row = c
                .query_opt(
                    &format!("SELECT {WORKFLOW_COLUMNS} FROM workflows WHERE id = $1"),
                    &[&id],
                )
                .await
                .map_err(pg)?;
            Ok(row.as_ref().map(workflow_row))
        })
    }

    fn claim(&self, claim: Claim) -> BoxFuture<'_, Result<Vec<String>, StoreError>> {
        Box::pin(self.claim_tx(claim))
    }

    fn renew<'a>(
        &'a self,
        id: &'a str,
        owner: &'a str,
        lease_until_ms: u64,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(self.renew_held(id, owner, "", None, lease_until_ms))
    }

    fn renew_instance<'a>(
        &'a self,
        id: &'a str,
        owner: &'a str,
        instance: &'a str,
        now_ms: u64,
        lease_until_ms: u64,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(self.renew_held(id, owner, instance, Some(now_ms), lease_until_ms))
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
        Box::pin(async move {
            let c = self.conn().await?;
            let n = c
                .execute(
                    "UPDATE workflows SET owner = NULL, released_by = $2
                     WHERE id = $1 AND owner = $2 AND ($3::TEXT = '' OR instance = $3)",
                    &[&id, &owner, &instance],
                )
                .await
                .map_err(pg)?;
            if n == 1 { Ok(()) } else { Err(lost(id, owner)) }
        })
    }

    fn purge(&self, p: Purge) -> BoxFuture<'_, Result<u64, StoreError>> {
        Box::pin(self.purge_tx(p))
    }

    fn review_put(&self, item: StoredReview) -> BoxFuture<'_, Result<(), StoreError>> {
        Box::pin(async move {
            let c = self.conn().await?;
            c.execute(
                "INSERT INTO reviews (id, workflow, status, updated, body) VALUES ($1, $2, $3, $4, $5)
                 ON CONFLICT (id) DO UPDATE SET workflow = EXCLUDED.workflow,
                   status = EXCLUDED.status, updated = EXCLUDED.updated, body = EXCLUDED.body",
                &[&item.id, &item.workflow_id, &item.status, &sql_int(item.updated_ms), &item.body],
            )
            .await
            .map_err(pg)?;
            Ok(())
        })
    }

    fn review_put_if(
        &self,
        expected: Option<StoredReview>,
        item: StoredReview,
    ) -> BoxFuture<'_, Result<bool, StoreError>> {
        Box::pin(async move {
            let mut conn = self.conn().await?;
            let tx = conn.transaction().await.map_err(pg)?;
            // The row is locked as it is read (`FOR UPDATE`): no other writer changes it
            // between the comparison and the update. An item that does not exist yet has no
            // row to lock: two inserts at once meet on the primary key, and the second finds
            // nothing inserted (`DO NOTHING`).
            let stored = tx
                .query_opt(
                    "SELECT id, workflow, status, updated, body FROM reviews WHERE id = $1
                     FOR UPDATE",
                    &[&item.id],
                )
                .await
                .map_err(pg)?
                .as_ref()
                .map(review_row)
                .transpose()?;
            if stored != expected {
                return Ok(false);
            }
            let written = if stored.is_some() {
                tx.execute(
                    "UPDATE reviews SET workflow = $2, status = $3, updated = $4, body = $5
                     WHERE id = $1",
                    &[
                        &item.id,
                        &item.workflow_id,
                        &item.status,
                        &sql_int(item.updated_ms),
                        &item.body,
                    ],
                )
                .await
                .map_err(pg)?
            } else {
                tx.execute(
                    "INSERT INTO reviews (id, workflow, status, updated, body)
                     VALUES ($1, $2, $3, $4, $5) ON CONFLICT (id) DO NOTHING",
                    &[
                        &item.id,
                        &item.workflow_id,
                        &item.status,
                        &sql_int(item.updated_ms),
                        &item.body,
                    ],
                )
                .await
                .map_err(pg)?
            };
            tx.commit().await.map_err(pg)?;
            Ok(written == 1)
        })
    }

    fn review_get<'a>(
        &'a self,
        id: &'a str,
    ) -> BoxFuture<'a, Result<Option<StoredReview>, StoreError>> {
        Box::pin(async move {
            let c = self.conn().await?;
            let row = c
                .query_opt(
                    "SELECT id, workflow, status, updated, body FROM reviews WHERE id = $1",
                    &[&id],
                )
                .await
                .map_err(pg)?;
            row.as_ref().map(review_row).transpose()
        })
    }

    fn review_list(&self) -> BoxFuture<'_, Result<Vec<StoredReview>, StoreError>> {
        Box::pin(async move {
            let c = self.conn().await?;
            let rows = c
                .query(
                    "SELECT id, workflow, status, updated, body FROM reviews ORDER BY ord",
                    &[],
                )
                .await
                .map_err(pg)?;
            rows.iter().map(review_row).collect()
        })
    }

    fn checkpoint_put(&self, cp: StoredCheckpoint) -> BoxFuture<'_, Result<(), StoreError>> {
        Box::pin(async move {
            // Under the agent's advisory lock, as `checkpoint_put_next` takes it: a version
            // written here between its read of the newest and its insert would fail its insert
            // (a lifecycle's fenced write and a `Checkpoints::save` of the same agent).
            let mut c = self.conn().await?;
            let tx = c.transaction().await.map_err(pg)?;
            tx.execute(CHECKPOINT_LOCK, &[&cp.agent])
                .await
                .map_err(pg)?;
            // This version or a newer one (see `Store::checkpoint_put`); under the lock, no
            // other checkpoint write of the agent comes between this read and the insert.
            let newest: Option<i64> = tx
                .query_one(
                    "SELECT max(version) FROM checkpoints WHERE agent = $1 AND version >= $2",
                    &[&cp.agent, &sql_int(cp.version)],
                )
                .await
                .map_err(pg)?
                .get(0);
            if let Some(newest) = newest {
                return Err(checkpoint_conflict(
                    &cp.agent,
                    cp.version,
                    from_sql_int(newest),
                ));
            }
            tx.execute(
                "INSERT INTO checkpoints (agent, version, at, checksum, data) VALUES ($1, $2, $3, $4, $5)",
                &[&cp.agent, &sql_int(cp.version), &sql_int(cp.at_ms), &cp.checksum, &cp.data],
            )
            .await
            .map_err(|e| {
                conflict_or(e, || {
                    format!("checkpoint {} version {} exists already", cp.agent, cp.version)
                })
            })?;
            tx.commit().await.map_err(pg)?;
            Ok(())
        })
    }

    fn checkpoint_put_next(&self, cp: StoredCheckpoint) -> BoxFuture<'_, Result<u64, StoreError>> {
        Box::pin(self.checkpoint_put_next_tx(cp))
    }

    fn checkpoint_get<'a>(
        &'a self,
        agent: &'a str,
        version: u64,
    ) -> BoxFuture<'a, Result<Option<StoredCheckpoint>, StoreError>> {
        Box::pin(async move {
            let c = self.conn().await?;
            let row = c
                .query_opt(
                    "SELECT at, checksum, data FROM checkpoints WHERE agent = $1 AND version = $2",
                    &[&agent, &sql_int(version)],
                )
                .await
                .map_err(pg)?;
            Ok(row.map(|r| StoredCheckpoint {
                agent: agent.to_owned(),
                version,
                at_ms: from_sql_int(r.get(0)),
                checksum: r.get(1),
                data: r.get(2),
            }))
        })
    }

    fn checkpoint_versions<'a>(
        &'a self,
        agent: &'a str,
    ) -> BoxFuture<'a, Result<Vec<CheckpointMeta>, StoreError>> {
        Box::pin(async move {
            let c = self.conn().await?;
            let rows = c
                .query(
                    "SELECT version, at, checksum, octet_length(data) FROM checkpoints
                     WHERE agent = $1 ORDER BY version DESC",
                    &[&agent],
                )
                .await
                .map_err(pg)?;
            Ok(rows
                .iter()
                .map(|r| CheckpointMeta {
                    version: from_sql_int(r.get(0)),
                    at_ms: from_sql_int(r.get(1)),
                    checksum: r.get(2),
                    len: r.get::<_, i32>(3) as u64,
                })
                .collect())
        })
    }

    fn checkpoint_prune<'a>(
        &'a self,
        agent: &'a str,
        keep: usize,
    ) -> BoxFuture<'a, Result<u64, StoreError>> {
        Box::pin(async move {
            let c = self.conn().await?;
            c.execute(
                "DELETE FROM checkpoints WHERE agent = $1 AND version NOT IN
                 (SELECT version FROM checkpoints WHERE agent = $1 ORDER BY version DESC LIMIT $2)",
                &[&agent, &(keep.min(i64::MAX as usize) as i64)],
            )
            .await
            .map_err(pg)
        })
    }
}

impl PostgresStore {
    /// Overwrites the data of a stored checkpoint without updating its checksum: a test hook
    /// that simulates corruption. Returns whether the checkpoint existed.
    pub async fn corrupt_checkpoint(
        &self,
        agent: &str,
        version: u64,
        data: Vec<u8>,
    ) -> Result<bool, StoreError> {
        let c = self.conn().await?;
        let n = c
            .execute(
                "UPDATE checkpoints SET data = $3 WHERE agent = $1 AND version = $2",
                &[&agent, &sql_int(version), &data],
            )
            .await
            .map_err(pg)?;
        Ok(n == 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schema_names() {
        for ok in ["a", "t_1", "journal_2026", "_x", &"a".repeat(63)] {
            assert!(valid_schema(ok), "{ok:?} is valid");
        }
        for bad in [
            "",
            &"a".repeat(64),
            "1abc",
            "Abc",
            "a-b",
            "a b",
            "a;drop",
            "é",
            "a\"b",
        ] {
            assert!(!valid_schema(bad), "{bad:?} is invalid");
        }
    }

    /// The database at `TEST_PALISADE_PG_URL`, and a fresh schema name for test `name`; `None`
    /// (skip) without it, unless `CI` is set: then the test fails.
    fn database(name: &str) -> Option<(String, String)> {
        let Ok(url) = std::env::var("TEST_PALISADE_PG_URL") else {
            assert!(
                std::env::var_os("CI").is_none(),
                "CI is set but TEST_PALISADE_PG_URL is not: run the PostgreSQL tests under scripts/pg.sh"
            );
            eprintln!("skipping {name}: TEST_PALISADE_PG_URL is not set (run under scripts/pg.sh)");
            return None;
        };
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .subsec_nanos();
        Some((url, format!("u_{name}_{}_{nanos}", std::process::id())))
    }

    #[tokio::test(start_paused = true)]
    async fn debug_names_the_connections_and_the_schema() {
        let Some((url, schema)) = database("debug") else {
            return;
        };
        let store = PostgresStore::connect_with(&url, Some(&schema), 2)
            .await
            .unwrap();
        assert_eq!(
            format!("{store:?}"),
            format!("PostgresStore {{ connections: 2, schema: Some({schema:?}) }}")
        );
    }

    #[tokio::test(start_paused = true)]
    async fn corrupt_checkpoint_overwrites_the_data_only() {
        let Some((url, schema)) = database("corrupt") else {
            return;
        };
        let store = PostgresStore::connect_with(&url, Some(&schema), 1)
            .await
            .unwrap();
        let cp = StoredCheckpoint {
            agent: "crawler".into(),
            version: 1,
            at_ms: 10,
            checksum: "sum".into(),
            data: b"state".to_vec(),
        };
        store.checkpoint_put(cp.clone()).await.unwrap();
        assert!(
            store
                .corrupt_checkpoint("crawler", 1, b"junk".to_vec())
                .await
                .unwrap()
        );
        let got = store.checkpoint_get("crawler", 1).await.unwrap().unwrap();
        assert_eq!(got.data, b"junk");
        assert_eq!((got.checksum, got.at_ms), (cp.checksum, cp.at_ms));
        assert!(
            !store
                .corrupt_checkpoint("crawler", 2, b"junk".to_vec())
                .await
                .unwrap()
        );
        assert!(store.checkpoint_get("crawler", 2).await.unwrap().is_none());
    }

    /// The journal's primary key is the last line of defence: an entry whose number exists
    /// already (although the workflow's count says otherwise) is a conflict, not a failure.
    #[tokio::test(start_paused = true)]
    async fn a_journal_entry_that_exists_is_a_conflict() {
        let Some((url, schema)) = database("stray") else {
            return;
        };
        let store = PostgresStore::connect_with(&url, Some(&schema), 1)
            .await
            .unwrap();
        let entry = |seq| {
            Append::new(
                "w",
                "saga",
                "order",
                seq,
                seq,
                serde_json::json!(seq),
                "running",
                "a",
                10_000,
            )
        };
        store.append(entry(0)).await.unwrap();
        store
            .conn()
            .await
            .unwrap()
            .execute(
                "INSERT INTO journal (workflow, seq, at, event) VALUES ('w', 1, 1, '1')",
                &[],
            )
            .await
            .unwrap();
        let err = store.append(entry(1)).await.unwrap_err();
        assert!(matches!(err, StoreError::Conflict(_)), "{err:?}");
        assert_eq!(store.workflow("w").await.unwrap().unwrap().entries, 1);
    }

    /// An entry or a review item that does not decode (here: nested deeper than `serde_json`
    /// reads, as an earlier version could write) is reported as corrupt, as in the other
    /// stores; decoding the row panicked.
    #[tokio::test(start_paused = true)]
    async fn undecodable_json_is_corrupt_not_a_panic() {
        let Some((url, schema)) = database("undecodable") else {
            return;
        };
        let store = PostgresStore::connect_with(&url, Some(&schema), 1)
            .await
            .unwrap();
        let deep = format!("{}{}", "[".repeat(200), "]".repeat(200));
        store
            .conn()
            .await
            .unwrap()
            .batch_execute(&format!(
                "INSERT INTO journal (workflow, seq, at, event) VALUES ('w', 0, 1, '{deep}');
                 INSERT INTO reviews (id, workflow, status, updated, body)
                 VALUES ('w/0', 'w', 'open', 1, '{deep}')"
            ))
            .await
            .unwrap();
        let corrupt = |r: Result<(), StoreError>| match r {
            Err(StoreError::Corrupt(m)) => m.contains("recursion limit"),
            _ => false,
        };
        assert!(corrupt(store.journal("w").await.map(drop)));
        assert!(corrupt(store.review_get("w/0").await.map(drop)));
        assert!(corrupt(store.review_list().await.map(drop)));
    }

    /// A database made by an earlier version, with `jsonb` journal and review columns: the
    /// store converts them on connect, keeps what they held, and then journals a NUL
    /// character, which `jsonb` refuses.
    #[tokio::test(start_paused = true)]
    async fn jsonb_columns_of_an_earlier_version_are_converted() {
        let Some((url, schema)) = database("jsonb") else {
            return;
        };
        let (old, connection) = tokio_postgres::connect(&url, NoTls).await.unwrap();
        tokio::spawn(connection);
        let earlier = SCHEMA.replace(" JSON NOT NULL", " JSONB NOT NULL");
        assert_eq!(earlier.matches("JSONB").count(), 2);
        old.batch_execute(&format!(
            "CREATE SCHEMA {schema}; SET search_path TO {schema}; {earlier}
             INSERT INTO reviews (id, workflow, status, updated, body)
             VALUES ('w/0', 'w', 'open', 1, '{{\"kept\": true}}')"
        ))
        .await
        .unwrap();
        let types = || async {
            old.query(
                "SELECT table_name::TEXT, column_name::TEXT, data_type::TEXT
                 FROM information_schema.columns
                 WHERE table_schema = $1 AND data_type IN ('json', 'jsonb')
                 ORDER BY table_name",
                &[&schema],
            )
            .await
            .unwrap()
            .iter()
            .map(|r| {
                format!(
                    "{}.{} {}",
                    r.get::<_, String>(0),
                    r.get::<_, String>(1),
                    r.get::<_, String>(2)
                )
            })
            .collect::<Vec<_>>()
        };
        assert_eq!(types().await, ["journal.event jsonb", "reviews.body jsonb"]);
        let store = PostgresStore::connect_with(&url, Some(&schema), 1)
            .await
            .unwrap();
        assert_eq!(types().await, ["journal.event json", "reviews.body json"]);
        let kept = store.review_get("w/0").await.unwrap().unwrap();
        assert_eq!(kept.body, serde_json::json!({"kept": true}));
        let event = serde_json::json!({"text": "page\u{0}text"});
        let append = Append::new(
            "w",
            "saga",
            "order",
            0,
            1,
            event.clone(),
            "running",
            "a",
            10,
        );
        store.append(append).await.unwrap();
        assert_eq!(store.journal("w").await.unwrap()[0].event, event);
        // Connecting again finds nothing to convert.
        PostgresStore::connect_with(&url, Some(&schema), 1)
            .await
            .unwrap();
        assert_eq!(types().await, ["journal.event json", "reviews.body json"]);
    }

    /// A database made by the first version (no `released_by`, `instance` nor `renewed`
    /// column, claimed workflows in it): connecting adds the columns and keeps the rows,
    /// which read as never released, held by no instance in particular, renewed at an
    /// unknown time; release, claims (by owner and by instance) and appends then work;
    /// connecting again finds nothing to add. The
    /// `reviews_workflow` index, which a purge deletes review items through, is added too.
    #[tokio::test(start_paused = true)]
    async fn a_database_of_the_previous_version_gets_the_new_column() {
        let Some((url, schema)) = database("released") else {
            return;
        };
        let (old, connection) = tokio_postgres::connect(&url, NoTls).await.unwrap();
        tokio::spawn(connection);
        old.batch_execute(&format!(
            "CREATE SCHEMA {schema}; SET search_path TO {schema}; {SCHEMA}
             INSERT INTO workflows (id, kind, name, state, owner, lease_until, created, updated,
               entries) VALUES ('w', 'saga', 'd', 'running', 'a', 10000, 1, 1, 1),
               ('v', 'saga', 'd', 'compensating', 'a', 10000, 1, 1, 1);
             INSERT INTO journal (workflow, seq, at, event)
               VALUES ('w', 0, 1, '{{}}'), ('v', 0, 1, '{{}}')"
        ))
        .await
        .unwrap();
        let columns = || async {
            old.query_one(
                "SELECT count(*) FROM information_schema.columns
                 WHERE table_schema = $1 AND table_name = 'workflows'
                   AND column_name IN ('released_by', 'instance', 'renewed')",
                &[&schema],
            )
            .await
            .unwrap()
            .get::<_, i64>(0)
        };
        let indexes = || async {
            old.query_one(
                "SELECT count(*) FROM pg_indexes
                 WHERE schemaname = $1 AND indexname = 'reviews_workflow'
                   AND indexdef LIKE '%ON ' || $1 || '.reviews USING btree (workflow)'",
                &[&schema],
            )
            .await
            .unwrap()
            .get::<_, i64>(0)
        };
        assert_eq!((columns().await, indexes().await), (0, 0));
        let store = PostgresStore::connect_with(&url, Some(&schema), 1)
            .await
            .unwrap();
        assert_eq!((columns().await, indexes().await), (3, 1));
        crate::store::release_hands_w_from_a_to_b(&*store).await;
        crate::store::an_old_claim_waits_its_lease_for_an_instance(&*store).await;
        let store = PostgresStore::connect_with(&url, Some(&schema), 1)
            .await
            .unwrap();
        assert_eq!((columns().await, indexes().await), (3, 1));
        let w = store.workflow("w").await.unwrap().unwrap();
        assert_eq!((w.owner.as_deref(), w.lease_until_ms), (Some("b"), 6));
        assert_eq!(store.journal("w").await.unwrap().len(), 1);
    }

    /// Two processes starting together may both create the schema: the one that loses the
    /// race (a unique violation on the schema's name) goes on with the schema the other made.
    #[tokio::test(start_paused = true)]
    async fn connecting_while_another_process_creates_the_schema() {
        let Some((url, schema)) = database("race") else {
            return;
        };
        let (other, connection) = tokio_postgres::connect(&url, NoTls).await.unwrap();
        tokio::spawn(connection);
        other
            .batch_execute(&format!("BEGIN; CREATE SCHEMA {schema}"))
            .await
            .unwrap();
        let connect = tokio::spawn({
            let (url, schema) = (url.clone(), schema.clone());
            async move { PostgresStore::connect_with(&url, Some(&schema), 1).await }
        });
        // Wait until the store's CREATE SCHEMA waits for the other transaction, then commit it.
        let mut waited = 0;
        loop {
            let row = other
                .query_one(
                    "SELECT count(*) FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
                     WHERE NOT l.granted AND a.query LIKE 'CREATE SCHEMA IF NOT EXISTS ' || $1 || ';%'",
                    &[&schema],
                )
                .await
                .unwrap();
            if row.get::<_, i64>(0) > 0 {
                break;
            }
            waited += 1;
            assert!(waited < 100_000, "the store never waited for the schema");
            tokio::task::yield_now().await;
        }
        other.batch_execute("COMMIT").await.unwrap();
        let store = connect.await.unwrap().unwrap();
        store
            .checkpoint_put(StoredCheckpoint {
                agent: "a".into(),
                version: 1,
                at_ms: 1,
                checksum: "c".into(),
                data: vec![],
            })
            .await
            .unwrap();
        let row = other
            .query_one(&format!("SELECT count(*) FROM {schema}.checkpoints"), &[])
            .await
            .unwrap();
        assert_eq!(row.get::<_, i64>(0), 1, "the tables are in the schema");
    }

    /// The database ends the store's session (a restart, a failover, an administrator's
    /// `pg_terminate_backend`): the store connects again, to the same schema, instead of
    /// failing every operation until the process is restarted.
    #[tokio::test(start_paused = true)]
    async fn a_connection_the_server_ended_is_made_again() {
        let Some((url, schema)) = database("reconnect") else {
            return;
        };
        let store = PostgresStore::connect_with(&url, Some(&schema), 1)
            .await
            .unwrap();
        store
            .append(Append::new(
                "w",
                "saga",
                "d",
                0,
                1,
                serde_json::json!(1),
                "running",
                "a",
                10,
            ))
            .await
            .unwrap();
        let pid: i32 = store.conns[0]
            .lock()
            .await
            .query_one("SELECT pg_backend_pid()", &[])
            .await
            .unwrap()
            .get(0);
        let (admin, connection) = tokio_postgres::connect(&url, NoTls).await.unwrap();
        tokio::spawn(connection);
        admin
            .execute("SELECT pg_terminate_backend($1)", &[&pid])
            .await
            .unwrap();
        // Until the store's connection task has seen the session end.
        let mut waited = 0;
        while !store.conns[0].lock().await.is_closed() {
            waited += 1;
            assert!(waited < 100_000, "the session never ended");
            tokio::task::yield_now().await;
        }
        let w = store.workflow("w").await.unwrap().unwrap();
        assert_eq!(w.state, "running", "read from the same schema");
        store
            .append(Append::new(
                "w",
                "saga",
                "d",
                1,
                2,
                serde_json::json!(2),
                "running",
                "a",
                10,
            ))
            .await
            .unwrap();
        assert_eq!(store.journal("w").await.unwrap().len(), 2);
    }
}
