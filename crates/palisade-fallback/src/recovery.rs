//! Recovery escalation: an order for a failed agent call — retry with
//! backoff, a fallback agent, degradation, then a person — chosen by fault level.

use std::collections::VecDeque;
use std::fmt;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use palisade_core::{BoxError, Category, Class, ConfigError, FaultLevel, class_of};
use tokio::time::Instant;
use tower::ServiceExt;
use tower::util::BoxCloneService;
use tower_service::Service;

/// Which step of the escalation produced the answer (or gave up).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Step {
    /// The first call worked.
    Primary,
    /// A retry worked (L1, or L2 after clean-up).
    Retry,
    /// The fallback agent answered.
    FallbackAgent,
    /// A degraded answer was given.
    Degraded,
    /// Nothing worked: escalated to a person.
    Escalated,
    /// The caller cancelled: nothing to recover, nobody to tell.
    Cancelled,
    /// The agent's error is a normal outcome ([`Category::Ignored`], as its classifier
    /// decided: a cache miss, nothing new): returned as it is, nothing recovered.
    Outcome,
}

/// What recovery did for one call.
#[derive(Clone, Debug, PartialEq)]
pub struct Recovery {
    /// The step that answered (or gave up).
    pub strategy: Step,
    /// Calls made to the primary agent.
    pub attempts: u32,
    /// Every failure seen, in order, with its class.
    pub errors: Vec<(Class, String)>,
    /// Time from the first call to the end, on the tokio clock.
    pub elapsed: Duration,
}

/// A call handed to a person: what failed and what was tried.
#[derive(Clone, Debug, PartialEq)]
pub struct Escalation {
    /// The agent that failed.
    pub agent: String,
    /// The class of the last failure.
    pub class: Class,
    /// What recovery did.
    pub recovery: Recovery,
}

/// Where escalations go: a review queue, a pager, a ticket system.
pub trait EscalationSink: Send + Sync {
    /// Receives one escalation.
    fn escalate(&self, escalation: Escalation);
}

/// An in-memory, bounded [`EscalationSink`]: keeps the newest `capacity` escalations.
#[derive(Debug)]
pub struct MemorySink {
    capacity: usize,
    items: Mutex<VecDeque<Escalation>>,
}

impl MemorySink {
    /// Keeps at most `capacity` escalations (the oldest are dropped first).
    ///
    /// # Errors
    /// `capacity` must be at least 1.
    pub fn new(capacity: usize) -> Result<Self, ConfigError> {
        if capacity == 0 {
            return Err(ConfigError::new("capacity", "must be at least 1"));
        }
        Ok(MemorySink {
            capacity,
            items: Mutex::new(VecDeque::new()),
        })
    }

    /// The escalations held, oldest first.
    pub fn list(&self) -> Vec<Escalation> {
        self.items
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .cloned()
            .collect()
    }

    /// Removes and returns the escalations held.
    pub fn take(&self) -> Vec<Escalation> {
        self.items
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .drain(..)
            .collect()
    }
}

impl EscalationSink for MemorySink {
    fn escalate(&self, escalation: Escalation) {
        let mut items = self.items.lock().unwrap_or_else(|e| e.into_inner());
        if items.len() == self.capacity {
            items.pop_front();
        }
        items.push_back(escalation);
    }
}

/// The outcome of [`RecoveryManager::run`] when nothing answered.
#[derive(Debug)]
pub struct Unrecovered {
    /// The last error.
    pub error: BoxError,
    /// What recovery did (its strategy is `Escalated` or `Cancelled`).
    pub recovery: Recovery,
}

impl fmt::Display for Unrecovered {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "not recovered ({:?}): {}",
            self.recovery.strategy, self.error
        )
    }
}

impl std::error::Error for Unrecovered {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&*self.error)
    }
}

type Hook = Arc<dyn Fn() + Send + Sync>;
type Degrade<Req, R> = Arc<dyn Fn(&Req, Class) -> Option<R> + Send + Sync>;

/// Runs the recovery order for one agent's calls.
///
/// By the first failure's [fault level](palisade_core::FaultLevel):
/// * **L1** (transient): retry with backoff (1 s, 2 s, 4 s by default), honouring a longer
///   server hint up to [`max_retry_after`](RecoveryBuilder::max_retry_after) (60 s by
///   default; a failure asking for longer is not retried but goes on down the order at once);
/// * **L2** (resource): run the clean-up hook, then the reset hook, then retry with backoff;
/// * **L3** (logic): no retry; run the compensation hook, then escalate to a person;
///
/// then, for L1 and L2 still failing: the fallback agent, then degradation, then escalation to
/// a person through the [`EscalationSink`]. The caller's own cancellation is never retried nor
/// escalated: a call cancelled (its class [`Category::Cancelled`]) at its first attempt,
/// during the retries or while the fallback agent answers for it ends there, with
/// [`Step::Cancelled`], neither degraded nor escalated. An error the classifier calls a normal
/// outcome ([`Category::Ignored`]) is the agent's answer: returned at once with
/// [`Step::Outcome`], neither compensated, retried nor escalated. Failures per agent are
/// counted and reset by a success; neither a cancellation nor a normal outcome is a failure
/// of the agent.
///
/// A manager is `Send + Sync`: one `Arc<RecoveryManager>` serves every task, and
/// [`run`](Self::run)'s future is `Send` when the request, the response, the agent and its
/// future are, so it can be spawned.
pub struct RecoveryManager<Req, R> {
    agent: String,
    backoff: Vec<Duration>,
    max_retry_after: Duration,
    /// The fallback agent need only be `Clone + Send` (a `BoxCloneService` is not `Sync`): it
    /// sits behind a mutex, taken only to clone it for one call, so the manager is `Sync`.
    fallback: Option<Mutex<BoxCloneService<Req, R, BoxError>>>,
    degrade: Option<Degrade<Req, R>>,
    cleanup: Option<Hook>,
    reset: Option<Hook>,
    compensate: Option<Hook>,
    sink: Arc<dyn EscalationSink>,
    failures: AtomicU32,
}

/// Builds a [`RecoveryManager`]; made by [`RecoveryManager::builder`].
pub struct RecoveryBuilder<Req, R> {
    manager: RecoveryManager<Req, R>,
}

impl<Req, R> fmt::Debug for RecoveryBuilder<Req, R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("RecoveryBuilder")
            .field(&self.manager)
            .finish()
    }
}

impl<Req, R> RecoveryBuilder<Req, R> {
    /// The delays before each retry, one retry per delay (default 1 s, 2 s, 4 s); an empty
    /// list: no retries.
    pub fn backoff(mut self, delays: Vec<Duration>) -> Self {
        self.manager.backoff = delays;
        self
    }

    /// The longest server hint a retry waits for (default 60 s, as the retry layer's
    /// `max_retry_after`). A failure whose hint asks for longer (`Retry-After: 3600` on a
    /// quota) is not retried: the fallback agent, degradation or a person answer it at once,
    /// instead of holding the call for the hour.
    pub fn max_retry_after(mut self, max: Duration) -> Self {
        self.manager.max_retry_after = max;
        self
    }

    /// An agent of a related role that answers when retries did not (default none).
    pub fn fallback_agent<S>(mut self, agent: S) -> Self
    where
        S: Service<Req, Response = R, Error = BoxError> + Clone + Send + 'static,
        S::Future: Send + 'static,
        Req: 'static,
    {
        self.manager.fallback = Some(Mutex::new(BoxCloneService::new(agent)));
        self
    }

    /// A degraded answer from the request and the failure's class (`None`: cannot degrade;
    /// default: no degradation).
    pub fn degrade(mut self, f: impl Fn(&Req, Class) -> Option<R> + Send + Sync + 'static) -> Self {
        self.manager.degrade = Some(Arc::new(f));
        self
    }

    /// Runs before L2 retries: release resources (default none).
    pub fn cleanup(mut self, f: impl Fn() + Send + Sync + 'static) -> Self {
        self.manager.cleanup = Some(Arc::new(f));
        self
    }

    /// Runs after the clean-up before L2 retries: reset the agent's state (default none).
    pub fn reset(mut self, f: impl Fn() + Send + Sync + 'static) -> Self {
        self.manager.reset = Some(Arc::new(f));
        self
    }

    /// Runs for L3 failures: compensate what the call did (default none).
    pub fn compensate(mut self, f: impl Fn() + Send + Sync + 'static) -> Self {
        self.manager.compensate = Some(Arc::new(f));
        self
    }

    /// The manager.
    ///
    /// # Errors
    /// None today: every combination of these options is valid. The `Result` is the shape
    /// every palisade builder has, so that an option added later can be checked without
    /// breaking callers.
    pub fn build(self) -> Result<RecoveryManager<Req, R>, ConfigError> {
        Ok(self.manager)
    }
}

impl<Req, R> fmt::Debug for RecoveryManager<Req, R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RecoveryManager")
            .field("agent", &self.agent)
            .field("backoff", &self.backoff)
            .field("max_retry_after", &self.max_retry_after)
            .field("failures", &self.failures.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

/// The longest server hint a retry waits for unless set otherwise.
const DEFAULT_MAX_RETRY_AFTER: Duration = Duration::from_secs(60);

/// The delays before each retry unless set otherwise: 1 s, 2 s, 4 s.
fn default_backoff() -> Vec<Duration> {
    vec![
        Duration::from_secs(1),
        Duration::from_secs(2),
        Duration::from_secs(4),
    ]
}

impl<Req, R> RecoveryManager<Req, R>
where
    Req: Clone + Send + 'static,
    R: Send + 'static,
{
    /// Recovery for `agent`, escalating to `sink`, with the defaults: three retries after
    /// 1 s, 2 s and 4 s (each longer when the failure carries a longer server hint); no
    /// fallback agent, no degradation and no hooks, so what retries do not fix goes to `sink`.
    /// [`builder`](Self::builder) sets each.
    pub fn new(agent: impl Into<String>, sink: Arc<dyn EscalationSink>) -> Self {
        RecoveryManager {
            agent: agent.into(),
            backoff: default_backoff(),
            max_retry_after: DEFAULT_MAX_RETRY_AFTER,
            fallback: None,
            degrade: None,
            cleanup: None,
            reset: None,
            compensate: None,
            sink,
            failures: AtomicU32::new(0),
        }
    }

    /// Recovery for `agent`, escalating to `sink`, with a setter per option; the defaults are
    /// [`new`](Self::new)'s.
    pub fn builder(
        agent: impl Into<String>,
        sink: Arc<dyn EscalationSink>,
    ) -> RecoveryBuilder<Req, R> {
        RecoveryBuilder {
            manager: Self::new(agent, sink),
        }
    }

    /// Failures of this agent since its last success.
    pub fn failures(&self) -> u32 {
        self.failures.load(Ordering::Relaxed)
    }

    /// Calls `agent` with `req`, recovering as described above.
    ///
    /// # Errors
    /// [`Unrecovered`] when nothing answered: escalated, or cancelled by the caller.
    pub async fn run<S>(&self, agent: &mut S, req: Req) -> Result<(R, Recovery), Unrecovered>
    where
        S: Service<Req, Response = R>,
        S::Error: Into<BoxError>,
    {
        let start = Instant::now();
        let mut recovery = Recovery {
            strategy: Step::Primary,
            attempts: 0,
            errors: Vec::new(),
            elapsed: Duration::ZERO,
        };
        let finish = |mut recovery: Recovery, strategy| {
            recovery.strategy = strategy;
            recovery.elapsed = start.elapsed();
            recovery
        };

        let mut error = match self.attempt(agent, req.clone(), &mut recovery).await {
            Ok(r) => return Ok((r, finish(recovery, Step::Primary))),
            Err(e) => e,
        };
        let mut class = class_of(&error);
        if class.category == Category::Cancelled {
            return Err(Unrecovered {
                error,
                recovery: finish(recovery, Step::Cancelled),
            });
        }
        // A normal outcome, as the classifier says (its fault level would read it as a logic
        // fault): nothing to undo, retry or tell anyone about.
        if class.category == Category::Ignored {
            return Err(Unrecovered {
                error,
                recovery: finish(recovery, Step::Outcome),
            });
        }

        // By the first failure's fault level, kept for the whole call: retries for L1 and L2
        // (after clean-up and reset), none for L3. A retry failing otherwise (a validation
        // error after a 5xx) changes what is reported, not the path.
        let level = class.fault_level();
        match level {
            FaultLevel::Logic => {
                if let Some(compensate) = &self.compensate {
                    compensate();
                }
            }
            _ => {
                if level == FaultLevel::Resource {
                    if let Some(cleanup) = &self.cleanup {
                        cleanup();
                    }
                    if let Some(reset) = &self.reset {
                        reset();
                    }
                }
                for delay in &self.backoff {
                    let hint = class.retry_after.unwrap_or_default();
                    if !class.retryable || hint > self.max_retry_after {
                        break;
                    }
                    tokio::time::sleep((*delay).max(hint)).await;
                    match self.attempt(agent, req.clone(), &mut recovery).await {
                        Ok(r) => return Ok((r, finish(recovery, Step::Retry))),
                        Err(e) => {
                            class = class_of(&e);
                            error = e;
                        }
                    }
                }
            }
        }

        // The caller gave up during the retries: nothing left to recover, nobody to tell.
        if class.category == Category::Cancelled {
            return Err(Unrecovered {
                error,
                recovery: finish(recovery, Step::Cancelled),
            });
        }
        // A retry answered with a normal outcome: the agent's answer, as at the first attempt.
        if class.category == Category::Ignored {
            return Err(Unrecovered {
                error,
                recovery: finish(recovery, Step::Outcome),
            });
        }
        // A call whose first failure was unrecoverable (L3) goes to a person after
        // compensation; the rest (L1, L2 still failing after the retries) may still be
        // answered by another agent or degraded.
        if level != FaultLevel::Logic {
            if let Some(fallback) = &self.fallback {
                // Cloned under the lock, which is released before the call.
                let fallback = fallback.lock().unwrap_or_else(|e| e.into_inner()).clone();
                match fallback.oneshot(req.clone()).await {
                    Ok(r) => return Ok((r, finish(recovery, Step::FallbackAgent))),
                    Err(e) => {
                        let fallback_class = class_of(&e);
                        recovery.errors.push((fallback_class, e.to_string()));
                        // The caller gave up while the fallback agent answered for it: nothing
                        // left to recover, nobody to tell.
                        if fallback_class.category == Category::Cancelled {
                            return Err(Unrecovered {
                                error: e,
                                recovery: finish(recovery, Step::Cancelled),
                            });
                        }
                    }
                }
            }
            if let Some(r) = self
                .degrade
                .as_ref()
                .and_then(|degrade| degrade(&req, class))
            {
                return Ok((r, finish(recovery, Step::Degraded)));
            }
        }
        let recovery = finish(recovery, Step::Escalated);
        tracing::error!(target: "palisade_fallback", agent = %self.agent, category = class.category.as_str(), attempts = recovery.attempts, "escalating to a person");
        self.sink.escalate(Escalation {
            agent: self.agent.clone(),
            class,
            recovery: recovery.clone(),
        });
        Err(Unrecovered { error, recovery })
    }

    async fn attempt<S>(
        &self,
        agent: &mut S,
        req: Req,
        recovery: &mut Recovery,
    ) -> Result<R, BoxError>
    where
        S: Service<Req, Response = R>,
        S::Error: Into<BoxError>,
    {
        recovery.attempts += 1;
        let result = match agent.ready().await {
            Ok(agent) => agent.call(req).await.map_err(Into::into),
            Err(e) => Err(e.into()),
        };
        match &result {
            Ok(_) => self.failures.store(0, Ordering::Relaxed),
            Err(e) => {
                let class = class_of(e);
                // The caller's cancellation and a normal outcome say nothing of the agent.
                if !matches!(class.category, Category::Cancelled | Category::Ignored) {
                    self.failures.fetch_add(1, Ordering::Relaxed);
                }
                recovery.errors.push((class, e.to_string()));
            }
        }
        result
    }
}
