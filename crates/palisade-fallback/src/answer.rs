//! [`Answer`]: what a fallback-guarded call returns, and how degraded it is.

use std::fmt;

use palisade_core::Class;

/// Why an answer is degraded: the failure it stands in for, and the strategy that produced it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Degraded {
    /// The class of the failure the answer replaces.
    pub class: Class,
    /// The [name](crate::Strategy::name) of the strategy that answered (`"constant"`,
    /// `"from_error"`, `"service"`, `"last_good"`, ...): for a [`Chain`](crate::Chain), the
    /// member that answered.
    pub strategy: &'static str,
}

impl fmt::Display for Degraded {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "degraded answer from {} after {}",
            self.strategy, self.class
        )
    }
}

/// The response of a [`Fallback`](crate::Fallback) service: the real answer, a fallback
/// answer marked [`Degraded`], or a failing response handed back as it was.
///
/// A wrapper, rather than a marker hidden in the response, so that the type says an answer can
/// be degraded and the caller cannot miss it. For HTTP, turn it into the response with
/// [`Answer::into_inner`] and put the [`Degraded`] marker in the response's extensions (or a
/// header) where the caller should see it.
#[derive(Clone, Debug, PartialEq)]
pub enum Answer<R> {
    /// The dependency answered.
    Primary(R),
    /// A fallback answered in its place.
    Fallback {
        /// The fallback's response.
        response: R,
        /// Why, and which strategy answered.
        degraded: Degraded,
    },
    /// The dependency's response was judged a failure (a 503, say) and no fallback applied:
    /// here it is anyway, with its class.
    Restored {
        /// The failing response.
        response: R,
        /// Its class.
        class: Class,
    },
}

impl<R> Answer<R> {
    /// The response, whatever produced it.
    pub fn into_inner(self) -> R {
        match self {
            Answer::Primary(r)
            | Answer::Fallback { response: r, .. }
            | Answer::Restored { response: r, .. } => r,
        }
    }

    /// The response, by reference.
    pub fn get_ref(&self) -> &R {
        match self {
            Answer::Primary(r)
            | Answer::Fallback { response: r, .. }
            | Answer::Restored { response: r, .. } => r,
        }
    }

    /// Whether this is not the dependency's own successful answer.
    pub fn is_degraded(&self) -> bool {
        !matches!(self, Answer::Primary(_))
    }

    /// The degradation marker of a fallback answer.
    pub fn degraded(&self) -> Option<&Degraded> {
        match self {
            Answer::Fallback { degraded, .. } => Some(degraded),
            _ => None,
        }
    }
}
