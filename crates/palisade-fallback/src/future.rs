//! The fallback layer's [`ResponseFuture`].

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use palisade_classify::{BoxError, Class, FailedResponse, class_of};
use pin_project_lite::pin_project;

use palisade_classify::stripe::Stripe;

use crate::layer::Config;
use crate::strategy::{ChainErrors, Failure, FallbackFuture};
use crate::{Answer, Degraded, FallbackFailed, Strategy};

pin_project! {
    #[project = StateProj]
    enum State<F, R> {
        Primary { #[pin] inner: F },
        Fallback { fut: FallbackFuture<R>, original: Option<BoxError>, class: Class },
        Done,
    }
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
}

/// A failure no fallback answered: the failing response handed back if allowed, else `error`.
fn unanswered<R: Send + Sync + 'static>(
    original: BoxError,
    restore: bool,
    error: impl FnOnce(BoxError) -> BoxError,
) -> Result<Answer<R>, BoxError> {
    if !restore {
        return Err(error(original));
    }
    match original.downcast::<FailedResponse<R>>() {
        Ok(failed) => {
            let class = failed.class();
            Ok(Answer::Restored {
                response: failed.into_response(),
                class,
            })
        }
        Err(original) => Err(error(original)),
    }
}

impl<F, St, Req, R, E> Future for ResponseFuture<F, St, Req, R>
where
    F: Future<Output = Result<R, E>>,
    E: Into<BoxError>,
    St: Strategy<Req, R>,
    R: Send + Sync + 'static,
{
    type Output = Result<Answer<R>, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        loop {
            match this.state.as_mut().project() {
                StateProj::Primary { inner } => {
                    let error: BoxError = match ready!(inner.poll(cx)) {
                        Ok(response) => {
                            this.config.strategy.on_success(*this.key, &response);
                            this.state.set(State::Done);
                            return Poll::Ready(Ok(Answer::Primary(response)));
                        }
                        Err(e) => e.into(),
                    };
                    let class = class_of(&error);
                    if !(this.config.handles)(&class) {
                        this.state.set(State::Done);
                        return Poll::Ready(unanswered(error, this.config.restore, |e| e));
                    }
                    tracing::info!(
                        target: "palisade_fallback",
                        strategy = this.config.strategy.name(),
                        category = class.category.as_str(),
                        "answering a failure with a fallback"
                    );
                    let fut = this.config.strategy.fallback(
                        this.kept.take(),
                        *this.key,
                        Failure {
                            class,
                            error: &error,
                        },
                    );
                    this.state.set(State::Fallback {
                        fut,
                        original: Some(error),
                        class,
                    });
                }
                StateProj::Fallback {
                    fut,
                    original,
                    class,
                } => {
                    let result = ready!(fut.as_mut().poll(cx));
                    let class = *class;
                    let original = original
                        .take()
                        .unwrap_or_else(|| "fallback polled after completion".into());
                    this.state.set(State::Done);
                    return Poll::Ready(match result {
                        Ok(response) => Ok(Answer::Fallback {
                            response,
                            degraded: Degraded {
                                class,
                                strategy: this.config.strategy.name(),
                            },
                        }),
                        Err(failed) => {
                            tracing::warn!(target: "palisade_fallback", strategy = this.config.strategy.name(), error = %failed, "fallback failed");
                            unanswered(original, this.config.restore, |original| {
                                let mut errors = vec![original];
                                match failed.downcast::<ChainErrors>() {
                                    Ok(chain) => errors.extend(chain.0),
                                    Err(other) => errors.push(other),
                                }
                                Box::new(FallbackFailed::new(errors))
                            })
                        }
                    });
                }
                StateProj::Done => {
                    return Poll::Ready(Err("fallback future polled after completion".into()));
                }
            }
        }
    }
}
