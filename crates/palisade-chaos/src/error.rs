//! The error an injected failure returns.

use std::fmt;

use palisade_classify::{Class, HasClass};

/// A failure injected by the chaos layer ([`Effect::Fail`](crate::Effect::Fail)).
///
/// It carries the class the fault was configured with, so the layers above react to it as they
/// would to the real failure: [`class_of`](palisade_classify::class_of) reads it (the type is
/// registered with [`palisade_classify::register`] when a layer is built), and it can be
/// downcast from the `BoxError` as usual.
///
/// ```
/// use palisade_chaos::error::Injected;
/// use palisade_classify::{Category, Class};
///
/// let err = Injected::new(Class::new(Category::ServerError));
/// assert_eq!(err.class().category, Category::ServerError);
/// assert!(err.to_string().starts_with("injected fault: server_error"));
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Injected {
    class: Class,
}

impl Injected {
    /// An injected failure of `class`.
    pub fn new(class: Class) -> Self {
        Injected { class }
    }

    /// The class of the failure.
    pub fn class(&self) -> Class {
        self.class
    }
}

impl fmt::Display for Injected {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "injected fault: {}", self.class)
    }
}

impl std::error::Error for Injected {}

impl HasClass for Injected {
    fn class(&self) -> Class {
        self.class
    }
}
