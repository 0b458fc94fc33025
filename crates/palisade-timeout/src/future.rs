//! The response futures of [`Timeout`](crate::Timeout) and [`Deadline`](crate::Deadline).

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use palisade_classify::BoxError;
use pin_project_lite::pin_project;
use tokio::time::{Instant, Sleep, sleep, sleep_until};

use crate::error::{DeadlineExceeded, Elapsed};

pin_project! {
    /// The response future of [`Timeout`](crate::Timeout).
    ///
    /// Polls the inner future first; the timer is created only when the inner future first
    /// returns `Pending`, so a response that is ready at once costs no timer and no clock read.
    #[derive(Debug)]
    pub struct ResponseFuture<F> {
        #[pin]
        inner: F,
        #[pin]
        sleep: Option<Sleep>,
        timeout: Duration,
    }
}

impl<F> ResponseFuture<F> {
    pub(crate) fn new(inner: F, timeout: Duration) -> Self {
        ResponseFuture {
            inner,
            sleep: None,
            timeout,
        }
    }
}

impl<F, T, E> Future for ResponseFuture<F>
where
    F: Future<Output = Result<T, E>>,
    E: Into<BoxError>,
{
    type Output = Result<T, BoxError>;

    #[inline]
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        if let Poll::Ready(out) = this.inner.poll(cx) {
            return Poll::Ready(out.map_err(Into::into));
        }
        if this.sleep.is_none() {
            this.sleep.set(Some(sleep(*this.timeout)));
        }
        if let Some(sleep) = this.sleep.as_pin_mut() {
            ready!(sleep.poll(cx));
        }
        Poll::Ready(Err(Elapsed::new().into()))
    }
}

pin_project! {
    /// The response future of [`Deadline`](crate::Deadline).
    ///
    /// Polls the inner future inside [`context::with_deadline`](crate::context::with_deadline);
    /// the timer is created only when the inner future first returns `Pending`. On expiry the
    /// inner future is dropped and the call fails with [`DeadlineExceeded`].
    #[derive(Debug)]
    pub struct DeadlineFuture<F> {
        #[pin]
        inner: Option<F>,
        #[pin]
        sleep: Option<Sleep>,
        deadline: Instant,
    }
}

impl<F> DeadlineFuture<F> {
    pub(crate) fn new(inner: F, deadline: Instant) -> Self {
        DeadlineFuture {
            inner: Some(inner),
            sleep: None,
            deadline,
        }
    }

    /// The instant this call fails at.
    pub fn deadline(&self) -> Instant {
        self.deadline
    }
}

impl<F, T, E> Future for DeadlineFuture<F>
where
    F: Future<Output = Result<T, E>>,
    E: Into<BoxError>,
{
    type Output = Result<T, BoxError>;

    #[inline]
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        let deadline = *this.deadline;
        let Some(inner) = this.inner.as_mut().as_pin_mut() else {
            panic!("DeadlineFuture polled after completion");
        };
        if let Poll::Ready(out) = crate::context::with_deadline(deadline, || inner.poll(cx)) {
            this.inner.set(None);
            return Poll::Ready(out.map_err(Into::into));
        }
        if this.sleep.is_none() {
            this.sleep.set(Some(sleep_until(deadline)));
        }
        if let Some(sleep) = this.sleep.as_mut().as_pin_mut() {
            ready!(sleep.poll(cx));
        }
        // Expired: drop the inner future (and whatever it holds) and the timer now.
        this.inner.set(None);
        this.sleep.set(None);
        Poll::Ready(Err(DeadlineExceeded::new().into()))
    }
}
