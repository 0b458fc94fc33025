//! Saga definitions: ordered [`Step`]s, each a tower service with an optional compensation,
//! and the requests they receive.

use std::collections::HashSet;
use std::fmt;

use palisade_core::{BoxError, ConfigError};
use serde_json::Value;
use tower::util::BoxCloneSyncService;
use tower::{Service, ServiceExt};

/// What a step's service receives.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct StepRequest {
    /// The saga's id.
    pub saga_id: String,
    /// The step's index, from 0.
    pub step: usize,
    /// The step's name.
    pub name: String,
    /// A key that names this step of this saga and nothing else (`"{saga_id}/{step}"`): the
    /// same on every attempt, after every restart. Pass it to side-effecting tools so they
    /// can recognise a repeat and not do the work twice.
    pub idempotency_key: String,
    /// The attempt, from 1 (above 1 only when an idempotent step is repeated after a crash).
    pub attempt: u32,
    /// The saga's input.
    pub input: Value,
    /// The outputs of the steps before this one, in order.
    pub previous: Vec<Value>,
}

/// What a compensation's service receives.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct CompensationRequest {
    /// The saga's id.
    pub saga_id: String,
    /// The index of the step to undo.
    pub step: usize,
    /// The step's name.
    pub name: String,
    /// This compensation's own key (`"{saga_id}/{step}/undo"`), the same on every attempt.
    pub idempotency_key: String,
    /// The key the step itself was given, to find what it did.
    pub step_key: String,
    /// The attempt, from 1.
    pub attempt: u32,
    /// The saga's input.
    pub input: Value,
    /// What the step returned; `None` when the step's outcome is unknown, so it may or may not
    /// have taken effect (look it up by [`step_key`](CompensationRequest::step_key)): a crash
    /// interrupted it, it timed out, or its repeat after a crash failed (see
    /// [`StepStatus::Uncertain`](crate::journal::StepStatus::Uncertain)); or when its output
    /// nested too deep to be journaled ([`MAX_DEPTH`](crate::journal::MAX_DEPTH)).
    pub output: Option<Value>,
    /// Why the saga is being undone: the failure of the step that failed.
    pub cause: Option<String>,
}

/// The idempotency key of step `step` of saga `saga_id`.
pub fn step_key(saga_id: &str, step: usize) -> String {
    format!("{saga_id}/{step}")
}

/// The idempotency key of the compensation of step `step` of saga `saga_id`.
pub fn compensation_key(saga_id: &str, step: usize) -> String {
    format!("{saga_id}/{step}/undo")
}

pub(crate) type StepService = BoxCloneSyncService<StepRequest, Value, BoxError>;
pub(crate) type CompensationService = BoxCloneSyncService<CompensationRequest, (), BoxError>;

/// One step of a saga: a service (an agent call, a tool call) and, optionally, the service
/// that undoes it.
///
/// Services are cloned for each call, so they must be `Clone` (wrap a non-`Clone` one in
/// tower's `Buffer`). Resilience around a step is the step's own business: wrap it in
/// palisade's retry, timeout or breaker layers. The saga engine does not retry a failed
/// step: a failure that reaches it starts compensation.
///
/// A failure whose class is [`Category::Timeout`](palisade_core::Category::Timeout) (palisade's
/// timeout layer cut the call off) does not say the step had no effect: the other side may
/// have done the work and only answered late. Such a step is treated as a crash-interrupted
/// one: compensated (its compensation gets `output: None`), or escalated to the review queue
/// if it has none. Any other error is taken to mean the step did nothing, and only the steps
/// before it are compensated.
pub struct Step {
    pub(crate) name: String,
    pub(crate) service: StepService,
    pub(crate) compensation: Option<CompensationService>,
    pub(crate) idempotent: bool,
}

impl fmt::Debug for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Step")
            .field("name", &self.name)
            .field("compensable", &self.compensation.is_some())
            .field("idempotent", &self.idempotent)
            .finish()
    }
}

impl Step {
    /// A step named `name` that calls `service`. Not idempotent, no compensation.
    pub fn new<S, E>(name: impl Into<String>, service: S) -> Self
    where
        S: Service<StepRequest, Response = Value, Error = E> + Clone + Send + Sync + 'static,
        S::Future: Send + 'static,
        E: Into<BoxError> + 'static,
    {
        Step {
            name: name.into(),
            service: BoxCloneSyncService::new(service.map_err(Into::into)),
            compensation: None,
            idempotent: false,
        }
    }

    /// The same step, undone by `service` when a later step fails.
    ///
    /// A compensation may be called more than once for the same step (a crash between its
    /// call and the journal entry that records its success), so it must be idempotent: use
    /// [`CompensationRequest::idempotency_key`]. Failed compensations are retried with
    /// backoff and then escalated to the review queue.
    pub fn compensate<S, E>(mut self, service: S) -> Self
    where
        S: Service<CompensationRequest, Response = (), Error = E> + Clone + Send + Sync + 'static,
        S::Future: Send + 'static,
        E: Into<BoxError> + 'static,
    {
        self.compensation = Some(BoxCloneSyncService::new(service.map_err(Into::into)));
        self
    }

    /// The same step, marked idempotent: calling it twice with the same
    /// [`idempotency_key`](StepRequest::idempotency_key) has the effect of calling it once. A
    /// crash while it runs then repeats it on recovery; a step that is not idempotent is
    /// instead treated as possibly done and compensated (or escalated, without a
    /// compensation). A repeat that fails is treated as possibly done too (the attempt the
    /// crash cut off may have taken effect).
    pub fn idempotent(mut self) -> Self {
        self.idempotent = true;
        self
    }

    /// Its name.
    pub fn name(&self) -> &str {
        &self.name
    }
}

/// A named, ordered list of steps: what [`Sagas::run`](crate::Sagas::run) executes.
///
/// The name is written in each saga's journal, so that a restarted process finds the
/// definition again: register the same definitions, under the same names, in every process
/// that may recover the sagas.
#[derive(Debug)]
pub struct SagaDefinition {
    pub(crate) name: String,
    pub(crate) steps: Vec<Step>,
}

impl SagaDefinition {
    /// A definition named `name` with `steps`, checked: a non-empty name without a NUL
    /// character (which PostgreSQL cannot store: refused on every store alike), at least one
    /// step, step names that are unique and non-empty.
    pub fn new(name: impl Into<String>, steps: Vec<Step>) -> Result<Self, ConfigError> {
        let name = name.into();
        if name.is_empty() {
            return Err(ConfigError::new("saga.name", "must not be empty"));
        }
        // Stored in a text column: PostgreSQL cannot hold a NUL character.
        if name.contains('\0') {
            return Err(ConfigError::new(
                "saga.name",
                "must not hold a NUL character",
            ));
        }
        if steps.is_empty() {
            return Err(ConfigError::new(
                "saga.steps",
                "must hold at least one step",
            ));
        }
        let mut seen = HashSet::new();
        for s in &steps {
            if s.name.is_empty() {
                return Err(ConfigError::new(
                    "saga.steps",
                    "step names must not be empty",
                ));
            }
            if !seen.insert(s.name.as_str()) {
                return Err(ConfigError::new(
                    "saga.steps",
                    format!("step name {:?} is used twice", s.name),
                ));
            }
        }
        Ok(SagaDefinition { name, steps })
    }

    /// Its name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Its step names, in order.
    pub fn step_names(&self) -> Vec<String> {
        self.steps.iter().map(|s| s.name.clone()).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn step(name: &str) -> Step {
        Step::new(
            name,
            tower::service_fn(|_: StepRequest| async { Ok::<_, BoxError>(Value::Null) }),
        )
    }

    #[test]
    fn steps_and_definitions_know_their_names() {
        let undo = tower::service_fn(|_: CompensationRequest| async { Ok::<_, BoxError>(()) });
        let book = step("book").compensate(undo).idempotent();
        assert_eq!(book.name(), "book");
        assert_eq!(
            format!("{book:?}"),
            r#"Step { name: "book", compensable: true, idempotent: true }"#
        );
        assert_eq!(
            format!("{:?}", step("pay")),
            r#"Step { name: "pay", compensable: false, idempotent: false }"#
        );
        let trip = SagaDefinition::new("trip", vec![book, step("pay")]).unwrap();
        assert_eq!(trip.name(), "trip");
        assert_eq!(trip.step_names(), ["book", "pay"]);
    }
}
