//! `palisade-durable`: look at and act on the sagas, review queue and checkpoints in a SQLite
//! store, while the service that owns them runs.
//!
//! ```text
//! palisade-durable --db journal.db sagas list [--state escalated]
//! palisade-durable --db journal.db sagas show <saga-id>
//! palisade-durable --db journal.db review list [--all]
//! palisade-durable --db journal.db review show <item-id>
//! palisade-durable --db journal.db review retry <item-id>
//! palisade-durable --db journal.db review discard <item-id> --note "refunded by hand"
//! palisade-durable --db journal.db checkpoints list <agent>
//! palisade-durable --db journal.db tx list [--state preparing]
//! palisade-durable --db journal.db tx show <tx-id>
//! palisade-durable --db journal.db tx resolve <tx-id> abort --note "coordinator host lost"
//! palisade-durable --db journal.db purge --older-than 30d
//! ```
//!
//! An id of the other kind (`sagas show` of a transaction's id, `tx show` of a saga's) is
//! refused with what it is and the command that shows it.
//!
//! `--json` prints JSON instead of text. `review retry` records the request; the service runs
//! it on its next recovery, because only the service has the steps' code. Likewise
//! `tx resolve` journals a person's decision for a two-phase commit whose coordinator is gone
//! (`commit` only when every participant voted yes); the service's next recovery delivers it.
//!
//! `purge` deletes the finished sagas and transactions (completed, compensated, failed;
//! committed, aborted) whose latest entry is older than `--older-than` (`"30d"`, `"12h"`,
//! `"1h 30m"`; `"0s"`: every finished one), with their journals and review items, as
//! `Sagas::purge_finished` and `Coordinator::purge_finished` do, and prints how many went:
//! never a running, escalated or claimed one (nor its review items), nor checkpoints.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::{Parser, Subcommand};
use palisade_durable::error::SagaError;
use palisade_durable::journal::{Journal, SagaState, WorkflowSummary};
use palisade_durable::review::ReviewItem;
use palisade_durable::store::{SqliteStore, Store};
use palisade_durable::twopc::{Coordinator, Decision, Transactions, TxState, Vote};
use palisade_durable::{ReviewQueue, Sagas, checkpoint::Checkpoints};

/// Inspect and act on a palisade-durable SQLite store.
#[derive(Debug, Parser)]
#[command(name = "palisade-durable", version)]
struct Cli {
    /// The store's SQLite file (it must exist).
    #[arg(long, env = "PALISADE_DB")]
    db: PathBuf,
    /// Print JSON instead of text.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Sagas and their journals.
    #[command(subcommand)]
    Sagas(SagasCmd),
    /// Escalated work waiting for a person.
    #[command(subcommand)]
    Review(ReviewCmd),
    /// Agent checkpoints.
    #[command(subcommand)]
    Checkpoints(CheckpointsCmd),
    /// Two-phase-commit transactions.
    #[command(subcommand)]
    Tx(TxCmd),
    /// Delete finished sagas and transactions, with their journals.
    ///
    /// Deletes the sagas that completed, were compensated or failed, and the transactions that
    /// committed or aborted, whose latest journal entry is older than --older-than and that no
    /// process holds, with their review items; never a running, compensating or escalated
    /// saga, nor a preparing, committing or aborting transaction, whatever its age. The review
    /// items of the sagas kept, and checkpoints, are kept. Prints how many of each went.
    Purge {
        /// How long ago they must have finished: "30d", "12h", "1h 30m"; "0s" for every
        /// finished one.
        #[arg(long, value_name = "AGE", value_parser = parse_age)]
        older_than: Duration,
    },
}

/// An age as palisade's configuration files write durations (`palisade_core::serde_duration`:
/// "30d", "12h", "1h 30m"). A bare number is refused, not taken as milliseconds as in a
/// configuration file: `--older-than 30` meaning 30 ms would delete nearly everything finished.
fn parse_age(s: &str) -> Result<Duration, String> {
    let t = s.trim();
    if !t.is_empty() && t.chars().all(|c| c.is_ascii_digit() || c == '.') {
        return Err(format!(
            "time unit needed (for example {t}d or {t}h): a bare number is refused here, so \
             that it cannot mean milliseconds"
        ));
    }
    palisade_core::serde_duration::deserialize(serde_json::Value::from(s))
        .map_err(|e| e.to_string())
}

#[derive(Debug, Subcommand)]
enum TxCmd {
    /// Every transaction with its state, oldest first.
    List {
        /// Only transactions in this state (preparing, committing, aborting, committed,
        /// aborted).
        #[arg(long)]
        state: Option<TxState>,
    },
    /// One transaction: each participant's vote and acknowledgement, the decision, the
    /// journal.
    Show {
        /// The transaction's id.
        id: String,
    },
    /// Decide a transaction left undecided by a coordinator that is gone (instead of the
    /// abort recovery would presume); the service's next recovery delivers the decision.
    Resolve {
        /// The transaction's id.
        id: String,
        /// `commit` (only if every participant voted yes) or `abort`.
        #[arg(value_parser = parse_decision)]
        decision: Decision,
        /// Why (kept in the transaction's journal).
        #[arg(long)]
        note: String,
    },
}

fn parse_decision(s: &str) -> Result<Decision, String> {
    match s {
        "commit" => Ok(Decision::Commit),
        "abort" => Ok(Decision::Abort),
        _ => Err(format!("{s:?} is neither commit nor abort")),
    }
}

#[derive(Debug, Subcommand)]
enum SagasCmd {
    /// Every saga with its state, oldest first.
    List {
        /// Only sagas in this state (running, compensating, completed, compensated, failed,
        /// escalated).
        #[arg(long)]
        state: Option<SagaState>,
    },
    /// One saga, step by step, with its journal.
    Show {
        /// The saga's id.
        id: String,
    },
}

#[derive(Debug, Subcommand)]
enum ReviewCmd {
    /// Pending items (open or retry requested); `--all` shows closed ones too.
    List {
        /// Show closed items too.
        #[arg(long)]
        all: bool,
    },
    /// One item with its context and error history.
    Show {
        /// The item's id.
        id: String,
    },
    /// Ask for the item's work to be retried by the service's next recovery.
    Retry {
        /// The item's id.
        id: String,
    },
    /// Give up the item's work: the saga's remaining compensations will not run.
    Discard {
        /// The item's id.
        id: String,
        /// Why (kept with the item and in the saga's journal).
        #[arg(long)]
        note: String,
    },
}

#[derive(Debug, Subcommand)]
enum CheckpointsCmd {
    /// An agent's checkpoint versions, newest first.
    List {
        /// The agent.
        agent: String,
    },
}

/// `println!`, but a failed write is the function's error rather than a panic: the reader of a
/// pipe that stops early (`| head`) closes it, and the command then ends quietly (see `main`).
macro_rules! out {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        writeln!(std::io::stdout().lock(), $($arg)*)?;
    }};
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start a runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        // Whoever read the output stopped (`| head`): nothing more to say, as other tools.
        Err(e)
            if e.downcast_ref::<std::io::Error>()
                .is_some_and(|e| e.kind() == std::io::ErrorKind::BrokenPipe) =>
        {
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {}", report(&*e));
            if let Some(hint) = e.downcast_ref::<SagaError>().and_then(hint) {
                eprintln!("{hint}");
            }
            ExitCode::FAILURE
        }
    }
}

type Error = Box<dyn std::error::Error>;

/// `e`'s message and its sources', `: `-separated, as anyhow's `{:#}` prints them: the top
/// message alone can stop short of the cause ("error connecting to server"). A source whose
/// message is already in the text (the store's errors repeat their backend's) is not repeated.
fn report(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let m = s.to_string();
        if !text.contains(&m) {
            text.push_str(": ");
            text.push_str(&m);
        }
        source = s.source();
    }
    text
}

/// What to type instead, for an id of the other kind (`sagas show` of a transaction's id).
fn hint(e: &SagaError) -> Option<String> {
    let SagaError::WrongKind { id, kind, .. } = e else {
        return None;
    };
    let command = match kind.as_str() {
        "saga" => "sagas show",
        "2pc" => "tx show",
        _ => return None,
    };
    Some(format!("`palisade-durable {command} {id}` shows it"))
}

/// The name a unit variant has in `--json` output (`not_needed`), so that text and JSON say
/// the same.
fn json_name(v: &impl serde::Serialize) -> String {
    match serde_json::to_value(v) {
        Ok(serde_json::Value::String(s)) => s,
        other => format!("{other:?}"),
    }
}

fn print_json(v: &impl serde::Serialize) -> Result<(), Error> {
    out!("{}", serde_json::to_string_pretty(v)?);
    Ok(())
}

/// Prints a list of sagas or transactions (`noun`), as a table or as JSON.
fn print_summaries<S: std::fmt::Display + serde::Serialize>(
    list: &[WorkflowSummary<S>],
    json: bool,
    noun: &str,
) -> Result<(), Error> {
    if json {
        return print_json(&list);
    }
    out!("{:<32} {:<20} {:<13} OWNER", "ID", "NAME", "STATE");
    for w in list {
        out!(
            "{:<32} {:<20} {:<13} {}",
            w.id,
            w.name,
            w.state.to_string(),
            w.owner.as_deref().unwrap_or("-")
        );
    }
    out!("{} {noun}(s)", list.len());
    Ok(())
}

/// Refuses an SQLite database that is not a store: opening it as one would add the store's
/// tables to it and switch it to WAL mode, changing another program's file. Read without
/// writing (a read-only connection); a file SQLite cannot read is left to the store's own
/// open, whose error names the file and why.
fn not_another_database(path: &std::path::Path) -> Result<(), Error> {
    use rusqlite::{Connection, OpenFlags};
    let Ok(conn) = Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_ONLY) else {
        return Ok(());
    };
    let tables: Result<Vec<String>, _> = conn
        .prepare("SELECT name FROM sqlite_master WHERE type = 'table'")
        .and_then(|mut q| q.query_map([], |r| r.get(0))?.collect());
    match tables {
        Ok(tables) if !tables.is_empty() && !tables.iter().any(|t| t == "workflows") => {
            Err(format!(
                "{} is not a palisade-durable store: it is an SQLite database without a workflows \
             table (its tables: {}); it was left as it was",
                path.display(),
                tables.join(", ")
            )
            .into())
        }
        _ => Ok(()),
    }
}

async fn run(cli: Cli) -> Result<(), Error> {
    if !cli.db.exists() {
        return Err(format!("no store at {}", cli.db.display()).into());
    }
    not_another_database(&cli.db)?;
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open(&cli.db)?);
    match cli.command {
        Command::Sagas(SagasCmd::List { state }) => {
            let list: Vec<_> = Journal::new(store)
                .list()
                .await?
                .into_iter()
                .filter(|s| state.is_none_or(|st| st == s.state))
                .collect();
            print_summaries(&list, cli.json, "saga")?;
        }
        Command::Sagas(SagasCmd::Show { id }) => {
            let info = Journal::new(store).inspect(&id).await?;
            if cli.json {
                return print_json(&info);
            }
            out!("saga {} ({}): {}", info.id, info.name, info.state);
            out!("input: {}", info.input);
            for (i, s) in info.steps.iter().enumerate() {
                out!(
                    "  {i}. {:<20} {:<10} attempts {}  compensation {} ({} attempts)",
                    s.name,
                    json_name(&s.status),
                    s.attempts,
                    json_name(&s.compensation),
                    s.compensation_attempts
                );
                if let Some(e) = &s.error {
                    out!("       failed: {} [{}]", e.message, e.class);
                }
                for e in &s.compensation_errors {
                    out!("       compensation failed: {} [{}]", e.message, e.class);
                }
            }
            if let Some(r) = &info.review {
                out!("review item: {r}");
            }
            out!("journal:");
            for r in &info.journal {
                out!(
                    "  {:>4} {} {}",
                    r.seq,
                    r.at_ms,
                    serde_json::to_string(&r.event)?
                );
            }
        }
        Command::Review(cmd) => {
            let queue = ReviewQueue::new(store.clone());
            match cmd {
                ReviewCmd::List { all } => {
                    // Item by item: one that cannot be read is named (on stderr, and in the
                    // exit status), and the others are listed all the same.
                    let mut items = Vec::new();
                    let mut unreadable = Vec::new();
                    for stored in store.review_list().await? {
                        let closed = ["retried", "discarded"].contains(&stored.status.as_str());
                        let id = stored.id.clone();
                        match ReviewItem::try_from(stored) {
                            Ok(i) if all || i.status.is_pending() => items.push(i),
                            Ok(_) => {}
                            Err(e) if all || !closed => {
                                eprintln!("error: {e}");
                                unreadable.push(id);
                            }
                            Err(_) => {}
                        }
                    }
                    let unreadable = || -> Result<(), Error> {
                        if unreadable.is_empty() {
                            return Ok(());
                        }
                        Err(format!(
                            "{} review item(s) could not be read: {}",
                            unreadable.len(),
                            unreadable.join(", ")
                        )
                        .into())
                    };
                    if cli.json {
                        print_json(&items)?;
                        return unreadable();
                    }
                    out!(
                        "{:<36} {:<16} {:<16} {:<22} ERRORS",
                        "ID",
                        "STATUS",
                        "STEP",
                        "REASON"
                    );
                    for i in &items {
                        out!(
                            "{:<36} {:<16} {:<16} {:<22} {}",
                            i.id,
                            i.status,
                            i.step_name,
                            i.reason.to_string(),
                            i.errors.len()
                        );
                    }
                    out!("{} item(s)", items.len());
                    unreadable()?;
                }
                ReviewCmd::Show { id } => {
                    let i = queue.inspect(&id).await?;
                    if cli.json {
                        return print_json(&i);
                    }
                    out!("review item {} ({})", i.id, i.status);
                    out!(
                        "saga {} ({}), step {} {:?}",
                        i.saga_id,
                        i.saga_name,
                        i.step,
                        i.step_name
                    );
                    out!("reason: {} (escalated {} time(s))", i.reason, i.escalations);
                    out!("input: {}", i.input);
                    if let Some(o) = &i.output {
                        out!("step output: {o}");
                    }
                    if let Some(c) = &i.cause {
                        out!("saga failed because: {} [{}]", c.message, c.class);
                    }
                    for (n, e) in i.errors.iter().enumerate() {
                        out!("  attempt {}: {} [{}]", n + 1, e.message, e.class);
                    }
                    if let Some(n) = &i.note {
                        out!("note: {n}");
                    }
                }
                ReviewCmd::Retry { id } => {
                    let i = queue.request_retry(&id).await?;
                    if cli.json {
                        return print_json(&i);
                    }
                    out!(
                        "retry requested for {}: the service runs it on its next recovery",
                        i.id
                    );
                }
                ReviewCmd::Discard { id, note } => {
                    let i = queue.discard(&id, &note).await?;
                    if cli.json {
                        return print_json(&i);
                    }
                    out!("discarded {}: saga {} is now failed", i.id, i.saga_id);
                }
            }
        }
        Command::Tx(cmd) => tx(Transactions::new(store), cmd, cli.json).await?,
        Command::Purge { older_than } => purge(store, older_than, cli.json).await?,
        Command::Checkpoints(CheckpointsCmd::List { agent }) => {
            let versions = Checkpoints::new(store).versions(&agent).await?;
            if cli.json {
                return print_json(&versions);
            }
            out!(
                "{:<8} {:<15} {:<10} SHA-256",
                "VERSION",
                "SAVED (ms)",
                "BYTES"
            );
            for v in &versions {
                out!(
                    "{:<8} {:<15} {:<10} {}",
                    v.version,
                    v.at_ms,
                    v.len,
                    v.checksum
                );
            }
            out!("{} version(s)", versions.len());
        }
    }
    Ok(())
}

/// Deletes the finished sagas, then the finished transactions, older than `older_than`.
async fn purge(store: Arc<dyn Store>, older_than: Duration, json: bool) -> Result<(), Error> {
    let sagas = Sagas::builder(store.clone())
        .build()?
        .purge_finished(older_than)
        .await?;
    let transactions = match Coordinator::builder(store)
        .build()?
        .purge_finished(older_than)
        .await
    {
        Ok(n) => n,
        Err(e) => return Err(format!("deleted {sagas} saga(s), then: {e}").into()),
    };
    if json {
        return print_json(&serde_json::json!({ "sagas": sagas, "transactions": transactions }));
    }
    out!("deleted {sagas} finished saga(s) and {transactions} finished transaction(s)");
    Ok(())
}

async fn tx(txs: Transactions, cmd: TxCmd, json: bool) -> Result<(), Error> {
    match cmd {
        TxCmd::List { state } => {
            let list: Vec<_> = txs
                .list()
                .await?
                .into_iter()
                .filter(|t| state.is_none_or(|st| st == t.state))
                .collect();
            print_summaries(&list, json, "transaction")?;
        }
        TxCmd::Show { id } => {
            let info = txs.inspect(&id).await?;
            if json {
                return print_json(&info);
            }
            out!("transaction {} ({}): {}", info.id, info.name, info.state);
            out!("payload: {}", info.payload);
            for (i, p) in info.participants.iter().enumerate() {
                let vote = match &info.votes[i] {
                    None => "not asked".to_owned(),
                    Some(Vote::Yes) => "yes".to_owned(),
                    Some(Vote::No(why)) => format!("no ({why})"),
                };
                out!(
                    "  {i}. {p:<20} vote {vote:<12} acknowledged {:<5} failed deliveries {}",
                    if info.acknowledged[i] { "yes" } else { "no" },
                    info.delivery_failures[i]
                );
            }
            match info.decision {
                Some(d) => out!("decision: {}", format!("{d:?}").to_lowercase()),
                None => {
                    out!("decision: none yet (recovery presumes abort; `tx resolve` decides now)")
                }
            }
            out!("journal:");
            for (n, e) in info.journal.iter().enumerate() {
                out!("  {n:>4} {}", serde_json::to_string(e)?);
            }
        }
        TxCmd::Resolve { id, decision, note } => {
            let info = txs.resolve(&id, decision, &note).await?;
            if json {
                return print_json(&info);
            }
            out!(
                "transaction {} is {}: the service's next recovery delivers the decision",
                info.id,
                info.state
            );
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug)]
    struct Wrapper(&'static str, Option<Box<Wrapper>>);

    impl std::fmt::Display for Wrapper {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str(self.0)
        }
    }

    impl std::error::Error for Wrapper {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            self.1.as_deref().map(|w| w as _)
        }
    }

    /// Every source is printed after the message, once: one the message already says is not
    /// repeated, and the chain goes on past it.
    #[test]
    fn an_error_is_reported_with_its_sources() {
        let refused = Wrapper("Connection refused (os error 111)", None);
        let connecting = Wrapper("error connecting to server", Some(Box::new(refused)));
        let top = Wrapper("store backend failed", Some(Box::new(connecting)));
        assert_eq!(
            report(&top),
            "store backend failed: error connecting to server: Connection refused (os error 111)"
        );
        let repeats = Wrapper(
            "store backend failed: error connecting to server",
            Some(Box::new(Wrapper(
                "error connecting to server",
                Some(Box::new(Wrapper("timed out", None))),
            ))),
        );
        assert_eq!(
            report(&repeats),
            "store backend failed: error connecting to server: timed out"
        );
        assert_eq!(report(&Wrapper("alone", None)), "alone");
    }

    #[test]
    fn names_are_the_json_ones() {
        use palisade_durable::journal::{CompensationStatus, StepStatus};
        assert_eq!(json_name(&CompensationStatus::NotNeeded), "not_needed");
        assert_eq!(json_name(&CompensationStatus::Abandoned), "abandoned");
        assert_eq!(json_name(&StepStatus::Uncertain), "uncertain");
    }
}
