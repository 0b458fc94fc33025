//! The classify layer's [`ResponseFuture`].

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use pin_project_lite::pin_project;

use crate::error::ResponseClass;
use crate::{BoxError, Category, Class, Classified, Classify, FailedResponse};

pin_project! {
    /// The future of a [`ClassifyService`](crate::ClassifyService) call.
    #[derive(Debug)]
    pub struct ResponseFuture<F, C> {
        #[pin]
        inner: F,
        classifier: C,
    }
}

impl<F, C> ResponseFuture<F, C> {
    pub(crate) fn new(inner: F, classifier: C) -> Self {
        ResponseFuture { inner, classifier }
    }
}

/// Applies the verdict: successes pass through untouched, failures leave as errors carrying
/// their class.
pub(crate) fn apply<Res, C>(classifier: &C, result: Result<Res, BoxError>) -> Result<Res, BoxError>
where
    Res: Send + 'static,
    C: Classify<Res, BoxError>,
{
    let verdict = classifier.classify(&result);
    if let Some(class) = verdict {
        tracing::debug!(
            category = class.category.as_str(),
            retryable = class.retryable,
            retry_after = ?class.retry_after,
            response = result.is_ok(),
            "classified a failure"
        );
    }
    match (verdict, result) {
        (None, Ok(res)) => Ok(res),
        (None, Err(err)) => Err(Box::new(Classified::new(
            Class::new(Category::Ignored),
            err,
        ))),
        (Some(class), Ok(res)) => {
            let summary = classifier.describe(&res);
            let failed = FailedResponse::new(res, class);
            Err(Box::new(match summary {
                Some(summary) => failed.with_summary(summary),
                None => failed,
            }))
        }
        // Classified below already, with this class (a classify layer above a router whose
        // endpoints classify their own calls): passed on as it is. Wrapped again, a failed
        // response would hide inside a `Classified` (whose `source` is the response's own),
        // where `FailedResponse::restore` and the HTTP responders no longer find it.
        (Some(class), Err(err)) if carries(&*err, class) => Err(err),
        (Some(class), Err(err)) => Err(Box::new(Classified::new(class, err))),
    }
}

/// Whether `err` itself (not its chain) is a classified error or a failed response of class
/// `class`.
fn carries(err: &(dyn std::error::Error + 'static), class: Class) -> bool {
    match err.downcast_ref::<Classified>() {
        Some(classified) => classified.class() == class,
        None => err
            .source()
            .and_then(|source| source.downcast_ref::<ResponseClass>())
            .is_some_and(|tag| tag.0 == class),
    }
}

impl<F, C, Res, E> Future for ResponseFuture<F, C>
where
    F: Future<Output = Result<Res, E>>,
    E: Into<BoxError>,
    Res: Send + 'static,
    C: Classify<Res, BoxError>,
{
    type Output = Result<Res, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let result = ready!(this.inner.poll(cx)).map_err(Into::into);
        Poll::Ready(apply(this.classifier, result))
    }
}
