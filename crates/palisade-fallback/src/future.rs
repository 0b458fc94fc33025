//! The fallback layer's [`ResponseFuture`].

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll, ready};

use palisade_core::{BoxError, Category, Class, FailedResponse, class_of};
use pin_project_lite::pin_project;

use palisade_core::stripe::Stripe;

use crate::layer::Config;
use crate::strategy::{ChainErrors, Failure, FallbackFuture};
use crate::{Answer, Degraded, FallbackFailed, Strategy};

pin_project! {
    #[project = StateProj]
    #[project_replace = StateReplace]
    enum State<F, R> {
        Primary { #[pin] inner: F },
        // The inner service did not get ready: the call failed with this error, unsent.
        NotReady { error: BoxError },
        // Boxed: the failure path may allocate, and the future stays as small as the call's.
        Fallback { run: Box<Running<R>> },
        Done,
    }
}

/// The failure path: the strategy running (for a chain, one member after the other), and what
/// failed so far.
struct Running<R> {
    fut: FallbackFuture<R>,
    /// The member running (its index in a chain; 0 for a strategy that answers by itself).
    member: usize,
    /// Its name.
    name: &'static str,
    /// The call's own error, lent to each member in turn.
    original: BoxError,
    class: Class,
    /// The members tried before, beside their failures.
    failures: Vec<(&'static str, BoxError)>,
}

/// The `i`-th strategy to try: a chain's `i`-th member, or the strategy itself when it answers
/// by itself.
fn member<'a, Req, R, St: Strategy<Req, R>>(
    strategy: &'a St,
    i: usize,
) -> Option<&'a (dyn Strategy<Req, R> + 'a)> {
    match strategy.members() {
        Some(members) => members.get(i).map(|m| &**m),
        None => (i == 0).then_some(strategy as &dyn Strategy<Req, R>),
    }
}

/// Starts the `i`-th strategy on the failure: its name and future, or `None` when none is left.
/// A single strategy takes the kept request; each member of a chain takes its own copy of it
/// (if it keeps requests at all), so the request is cloned on the failure path only.
fn start<Req, R, St: Strategy<Req, R>>(
    strategy: &St,
    i: usize,
    kept: &mut Option<Req>,
    key: Option<u64>,
    class: Class,
    error: &BoxError,
) -> Option<(&'static str, FallbackFuture<R>)> {
    let m = member(strategy, i)?;
    let req = if strategy.members().is_some() {
        kept.as_ref().and_then(|r| m.keep_request(r))
    } else {
        kept.take()
    };
    Some((m.name(), m.fallback(req, key, Failure { class, error })))
}

pin_project! {
    /// The future of a [`Fallback`](crate::Fallback) call.
    pub struct ResponseFuture<F, St, Req, R> {
        #[pin]
        state: State<F, R>,
        config: Arc<Stripe<Arc<Config<St>>>>,
        kept: Option<Req>,
        key: Option<u64>,
    }
}

impl<F, St, Req, R> fmt::Debug for ResponseFuture<F, St, Req, R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseFuture").finish_non_exhaustive()
    }
}

impl<F, St, Req, R> ResponseFuture<F, St, Req, R> {
    pub(crate) fn new(
        inner: F,
        config: Arc<Stripe<Arc<Config<St>>>>,
        kept: Option<Req>,
        key: Option<u64>,
    ) -> Self {
        ResponseFuture {
            state: State::Primary { inner },
            config,
            kept,
            key,
        }
    }

    /// A call that fails with `error`, the inner service's readiness failure, without reaching
    /// the inner service: handled as a call failing with it.
    pub(crate) fn not_ready(
        error: BoxError,
        config: Arc<Stripe<Arc<Config<St>>>>,
        kept: Option<Req>,
        key: Option<u64>,
    ) -> Self {
        ResponseFuture {
            state: State::NotReady { error },
            config,
            kept,
            key,
        }
    }
}

/// A failure no fallback answered: the failing response handed back if allowed, else `error`.
fn unanswered<R: Send + 'static>(
    original: BoxError,
    restore: bool,
    error: impl FnOnce(BoxError) -> BoxError,
) -> Result<Answer<R>, BoxError> {
    if !restore {
        return Err(error(original));
    }
    // A retry's final error after timed-out attempts carries the failing response inside
    // its marker.
    let class = class_of(&original);
    match FailedResponse::<R>::restore(original) {
        Ok(response) => Ok(Answer::Restored { response, class }),
        Err(original) => Err(error(original)),
    }
}

impl<F, St, Req, R, E> Future for ResponseFuture<F, St, Req, R>
where
    F: Future<Output = Result<R, E>>,
    E: Into<BoxError>,
    St: Strategy<Req, R>,
    R: Send + 'static,
{
    type Output = Result<Answer<R>, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        loop {
            // The call's failure: the inner future's error, or its readiness failure.
            let error: BoxError = match this.state.as_mut().project() {
                StateProj::Primary { inner } => match ready!(inner.poll(cx)) {
                    Ok(response) => {
                        this.config.strategy.on_success(*this.key, &response);
                        this.state.set(State::Done);
                        return Poll::Ready(Ok(Answer::Primary(response)));
                    }
                    Err(e) => e.into(),
                },
                StateProj::NotReady { .. } => {
                    let StateReplace::NotReady { error } =
                        this.state.as_mut().project_replace(State::Done)
                    else {
                        unreachable!("the state was NotReady a moment ago")
                    };
                    error
                }
                StateProj::Fallback { run } => {
                    let result = ready!(run.fut.as_mut().poll(cx));
                    let strategy = &*this.config.strategy;
                    let cancelled = match result {
                        Ok(response) => {
                            if strategy.members().is_some() {
                                tracing::info!(target: "palisade_fallback", strategy = run.name, "chain member answered");
                            }
                            let degraded = Degraded {
                                class: run.class,
                                strategy: run.name,
                            };
                            palisade_core::metrics::fallback_answered(
                                &this.config.name,
                                run.name,
                                run.class.category,
                            );
                            this.state.set(State::Done);
                            return Poll::Ready(Ok(Answer::Fallback { response, degraded }));
                        }
                        Err(failed) => {
                            tracing::debug!(target: "palisade_fallback", strategy = run.name, error = %failed, "fallback strategy failed");
                            // A member that failed because the caller cancelled ends the chain:
                            // the cancelled call is not answered by the next member.
                            let cancelled = class_of(&failed).category == Category::Cancelled;
                            // A strategy that ran others itself lists their failures by name.
                            match failed.downcast::<ChainErrors>() {
                                Ok(chain) => run.failures.extend(chain.0),
                                Err(other) => run.failures.push((run.name, other)),
                            }
                            cancelled
                        }
                    };
                    run.member += 1;
                    if !cancelled
                        && let Some((name, fut)) = start(
                            strategy,
                            run.member,
                            this.kept,
                            *this.key,
                            run.class,
                            &run.original,
                        )
                    {
                        run.name = name;
                        run.fut = fut;
                        continue;
                    }
                    if cancelled {
                        tracing::debug!(target: "palisade_fallback", strategy = run.name, "the caller cancelled while a fallback answered; the chain stops");
                    } else {
                        every_fallback_failed(
                            &this.config.name,
                            strategy.name(),
                            run.failures.len(),
                        );
                    }
                    let StateReplace::Fallback { run } =
                        this.state.as_mut().project_replace(State::Done)
                    else {
                        unreachable!("the state was Fallback a moment ago")
                    };
                    let Running {
                        original,
                        mut failures,
                        ..
                    } = *run;
                    // The caller's cancellation, the failure just pushed, is the call's outcome:
                    // given back as it is (unless a failing response is handed back), so that
                    // the layers above read a cancellation, not the call's own failure, which a
                    // fallback above would answer and a breaker above would count.
                    let cancellation = if cancelled { failures.pop() } else { None };
                    return Poll::Ready(unanswered(original, this.config.restore, |original| {
                        match cancellation {
                            Some((_, cancellation)) => cancellation,
                            None => Box::new(FallbackFailed::new(original, failures)),
                        }
                    }));
                }
                StateProj::Done => panic!("`Fallback` response future polled after completion"),
            };
            let class = class_of(&error);
            if !(this.config.handles)(&class) {
                this.state.set(State::Done);
                return Poll::Ready(unanswered(error, this.config.restore, |e| e));
            }
            tracing::info!(
                target: "palisade_fallback",
                dependency = &*this.config.name,
                strategy = this.config.strategy.name(),
                category = class.category.as_str(),
                "answering a failure with a fallback"
            );
            let strategy = &*this.config.strategy;
            let Some((name, fut)) = start(strategy, 0, this.kept, *this.key, class, &error) else {
                // An empty chain: nothing to try, so no strategy answered.
                if !this.config.warned_empty.swap(true, Ordering::Relaxed) {
                    tracing::warn!(
                        target: "palisade_fallback",
                        strategy = strategy.name(),
                        "a fallback chain with no members answers no failure"
                    );
                }
                every_fallback_failed(&this.config.name, strategy.name(), 0);
                this.state.set(State::Done);
                return Poll::Ready(unanswered(error, this.config.restore, |original| {
                    Box::new(FallbackFailed::new(original, Vec::new()))
                }));
            };
            this.state.set(State::Fallback {
                run: Box::new(Running {
                    fut,
                    member: 0,
                    name,
                    original: error,
                    class,
                    failures: Vec::new(),
                }),
            });
        }
    }
}

/// Reports a call to `dependency` no strategy answered: `failures` strategies were tried, and
/// failed.
#[cold]
fn every_fallback_failed(dependency: &str, strategy: &'static str, failures: usize) {
    tracing::warn!(target: "palisade_fallback", dependency, strategy, failures, "every fallback failed");
    palisade_core::metrics::fallback_failed(dependency, strategy);
}
