//! Error types of the classify layer, and the configuration error every palisade crate shares.

use std::borrow::Cow;
use std::error::Error;
use std::fmt;

use sync_wrapper::SyncWrapper;

use crate::{BoxError, Class};

/// An error that left the classify layer, with the class the classifier gave it.
///
/// `Display` and `source()` are those of the wrapped error (the wrapper is transparent), so logs
/// read as before; [`class_of`](crate::class_of) finds the class without classifying again.
/// Use [`Classified::inner`] or [`Classified::into_inner`] to reach the original error.
pub struct Classified {
    class: Class,
    inner: BoxError,
}

impl Classified {
    /// Wraps `inner` with its class.
    pub fn new(class: Class, inner: impl Into<BoxError>) -> Self {
        Classified {
            class,
            inner: inner.into(),
        }
    }

    /// The class the classifier gave this error.
    pub fn class(&self) -> Class {
        self.class
    }

    /// The original error.
    pub fn inner(&self) -> &(dyn Error + Send + Sync + 'static) {
        &*self.inner
    }

    /// Unwraps the original error.
    pub fn into_inner(self) -> BoxError {
        self.inner
    }
}

impl fmt::Debug for Classified {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Classified")
            .field("class", &self.class)
            .field("inner", &self.inner)
            .finish()
    }
}

impl fmt::Display for Classified {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.inner, f)
    }
}

impl Error for Classified {
    fn source(&self) -> Option<&(dyn Error + 'static)> {
        self.inner.source()
    }
}

/// `err` and the errors below it, at most 64: each one's `source()`, except where that skips an
/// error. A [`Classified`]'s next is the error it wraps (its own `source()`, being
/// transparent, is that error's source), and an `io::Error` that wraps an error
/// (`io::Error::other(e)`) gives `e` (its `source()` is `e`'s source). So a marker such as
/// [`AfterTimeouts`](crate::failure::AfterTimeouts) is found under a classify layer that
/// wrapped it, and across an io boundary.
///
/// ```
/// use palisade_core::error::{Classified, chain};
/// use palisade_core::{BoxError, Category, Class};
///
/// let cause = std::io::Error::other("connection reset");
/// let err: BoxError = Box::new(Classified::new(Class::new(Category::Network), cause));
/// let texts: Vec<String> = chain(&*err).map(|e| e.to_string()).collect();
/// assert_eq!(texts, ["connection reset"; 3]);
/// ```
pub fn chain<'a>(
    err: &'a (dyn Error + 'static),
) -> impl Iterator<Item = &'a (dyn Error + 'static)> {
    // Bounded so that a cyclic `source()` cannot hang the caller.
    std::iter::successors(Some(err), |&e| {
        if let Some(classified) = e.downcast_ref::<Classified>() {
            return Some(classified.inner() as &(dyn Error + 'static));
        }
        match e
            .downcast_ref::<std::io::Error>()
            .and_then(std::io::Error::get_ref)
        {
            Some(inner) => Some(inner as &(dyn Error + 'static)),
            None => e.source(),
        }
    })
    .take(64)
}

/// A response that arrived but was judged a failure (an HTTP 503, a gRPC status in an `Ok`).
///
/// It travels up the stack as an error so that retry, breaker and route treat it as the failure
/// it is; the caller or the outermost layer can turn it back into the response with
/// [`FailedResponse::restore`] or [`FailedResponse::into_response`].
///
/// It says what failed: its message is the classifier's summary of the response when it gave
/// one ([`Classify::describe`](crate::Classify::describe): `HTTP 503 Service Unavailable`, a
/// gRPC status), then the class: `HTTP 503 Service Unavailable, classified as server_error
/// (medium, retryable)`; without one, `response classified as a failure: server_error
/// (medium, retryable)`. `Debug` and `Display` do not require `R: Debug`.
///
/// The response only needs to be `Send`, not `Sync` (an axum or hyper body is not): it is
/// reachable through `&mut` or by value only, so the error is `Sync` whatever `R` is, as a
/// [`BoxError`] must be.
///
/// # Example
/// ```
/// use palisade_core::{BoxError, Category, Class, FailedResponse};
///
/// let failed = FailedResponse::new(503u16, Class::new(Category::ServerError))
///     .with_summary("HTTP 503 Service Unavailable");
/// assert_eq!(
///     failed.to_string(),
///     "HTTP 503 Service Unavailable, classified as server_error (medium, retryable)"
/// );
/// let err: BoxError = Box::new(failed);
/// let response: Result<u16, BoxError> = FailedResponse::restore(err);
/// assert_eq!(response.unwrap(), 503);
/// ```
pub struct FailedResponse<R> {
    response: SyncWrapper<R>,
    tag: ResponseClass,
    summary: Option<Cow<'static, str>>,
}

impl<R> FailedResponse<R> {
    /// Wraps a response judged a failure.
    pub fn new(response: R, class: Class) -> Self {
        FailedResponse {
            response: SyncWrapper::new(response),
            tag: ResponseClass(class),
            summary: None,
        }
    }

    /// Says what failed, in a few words (`HTTP 503 Service Unavailable`): the start of its
    /// message.
    pub fn with_summary(mut self, summary: impl Into<Cow<'static, str>>) -> Self {
        self.summary = Some(summary.into());
        self
    }

    /// The class the classifier gave the response.
    pub fn class(&self) -> Class {
        self.tag.0
    }

    /// What failed, as the classifier summed it up, if it did.
    pub fn summary(&self) -> Option<&str> {
        self.summary.as_deref()
    }

    /// The response, mutably.
    pub fn response_mut(&mut self) -> &mut R {
        self.response.get_mut()
    }

    /// Unwraps the response.
    pub fn into_response(self) -> R {
        self.response.into_inner()
    }
}

impl<R: Send + 'static> FailedResponse<R> {
    /// Turns an error back into the response it carried, when it is a `FailedResponse<R>`, or
    /// a [`Classified`] around one (a classifier above judged it again, with another class),
    /// or an [`AfterTimeouts`](crate::failure::AfterTimeouts) around one (a retry's final
    /// error after timed-out attempts), these wrappers nested in any order (a classify layer
    /// above a retry wraps the retry's `AfterTimeouts` in its `Classified`); any other error
    /// comes back unchanged.
    pub fn restore(err: BoxError) -> Result<R, BoxError> {
        let err = match err.downcast::<FailedResponse<R>>() {
            Ok(failed) => return Ok(failed.into_response()),
            Err(err) => err,
        };
        let err = match err.downcast::<crate::failure::AfterTimeouts>() {
            Ok(after) => {
                let timeouts = after.timeouts();
                return Self::restore(after.into_inner()).map_err(|inner| {
                    Box::new(crate::failure::AfterTimeouts::new(timeouts, inner)) as BoxError
                });
            }
            Err(err) => err,
        };
        match err.downcast::<Classified>() {
            Ok(classified) if Self::carried_by(&*classified.inner) => {
                Self::restore(classified.into_inner())
            }
            Ok(classified) => Err(classified),
            Err(err) => Err(err),
        }
    }
}

impl<R: Send + 'static> FailedResponse<R> {
    /// Whether `err` carries a `FailedResponse<R>` that [`restore`](Self::restore) gives back:
    /// it is one, or a `Classified` or an `AfterTimeouts` around one, at any depth.
    fn carried_by(err: &(dyn Error + 'static)) -> bool {
        if err.is::<FailedResponse<R>>() {
            return true;
        }
        if let Some(classified) = err.downcast_ref::<Classified>() {
            return Self::carried_by(&*classified.inner);
        }
        if let Some(after) = err.downcast_ref::<crate::failure::AfterTimeouts>() {
            return Self::carried_by(&**after.inner());
        }
        false
    }
}

impl<R> fmt::Debug for FailedResponse<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FailedResponse")
            .field("response", &std::any::type_name::<R>())
            .field("class", &self.tag.0)
            .field("summary", &self.summary)
            .finish()
    }
}

impl<R> fmt::Display for FailedResponse<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.summary {
            Some(summary) => write!(f, "{summary}, classified as {}", self.tag.0),
            None => write!(f, "response classified as a failure: {}", self.tag.0),
        }
    }
}

impl<R> Error for FailedResponse<R> {
    fn source(&self) -> Option<&(dyn Error + 'static)> {
        // The class travels in a non-generic error so that `class_of` can find it by downcast
        // without knowing `R`.
        Some(&self.tag)
    }
}

/// The source of a [`FailedResponse`]: the class the response was given.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ResponseClass(pub Class);

impl fmt::Display for ResponseClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "classified as {}", self.0)
    }
}

impl Error for ResponseClass {}

/// Invalid configuration, reported when a layer, policy or classifier is built.
///
/// Every palisade crate uses this type, so a configuration mistake always names the field and
/// the rule it broke.
///
/// ```
/// use palisade_core::ConfigError;
///
/// let err = ConfigError::new("window", "must be greater than zero");
/// assert_eq!(err.to_string(), "invalid configuration: `window` must be greater than zero");
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigError {
    field: Cow<'static, str>,
    rule: Cow<'static, str>,
}

impl ConfigError {
    /// A configuration error for `field`, which broke `rule`.
    pub fn new(field: impl Into<Cow<'static, str>>, rule: impl Into<Cow<'static, str>>) -> Self {
        ConfigError {
            field: field.into(),
            rule: rule.into(),
        }
    }

    /// The field that was wrong.
    pub fn field(&self) -> &str {
        &self.field
    }

    /// The rule it broke.
    pub fn rule(&self) -> &str {
        &self.rule
    }

    /// The same error with its field placed under `section`: a part's own error, named by its
    /// path in the whole configuration.
    ///
    /// ```
    /// use palisade_core::ConfigError;
    ///
    /// let e = ConfigError::new("failure_rate.ratio", "must be within 0..=1").within("breaker");
    /// assert_eq!(e.field(), "breaker.failure_rate.ratio");
    /// assert_eq!(e.rule(), "must be within 0..=1");
    /// ```
    pub fn within(self, section: &str) -> Self {
        ConfigError {
            field: format!("{section}.{}", self.field).into(),
            rule: self.rule,
        }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid configuration: `{}` {}", self.field, self.rule)
    }
}

impl Error for ConfigError {}
