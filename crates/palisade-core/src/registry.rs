//! Error types that know their own class, and the registry that lets [`class_of`] find them.
//!
//! [`class_of`]: crate::class_of

use std::any::TypeId;
use std::error::Error;
use std::sync::RwLock;

use crate::Class;

/// An error type that knows its own class.
///
/// palisade's own failures ([`failure`](crate::failure): `Elapsed`, `CircuitOpen`,
/// `NoHealthyEndpoint`, ...) implement it, and [`class_of`](crate::class_of) knows them by
/// type. Implement it for your own error types and call [`register`] once at start-up: then
/// `class_of` reads their class from anywhere in an error's `source()` chain, while users can
/// still `downcast_ref` them as usual.
///
/// ```
/// use palisade_core::{class_of, register, BoxError, Category, Class, HasClass};
///
/// #[derive(Debug)]
/// struct QuotaSpent;
/// impl std::fmt::Display for QuotaSpent {
///     fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
///         f.write_str("quota spent")
///     }
/// }
/// impl std::error::Error for QuotaSpent {}
/// impl HasClass for QuotaSpent {
///     fn class(&self) -> Class {
///         Class::new(Category::ResourceExhausted)
///     }
/// }
///
/// register::<QuotaSpent>();
/// let err: BoxError = Box::new(QuotaSpent);
/// assert_eq!(class_of(&err).category, Category::ResourceExhausted);
/// ```
pub trait HasClass: Error + 'static {
    /// The class of this error.
    fn class(&self) -> Class;
}

type Probe = fn(&(dyn Error + 'static)) -> Option<Class>;

static PROBES: RwLock<Vec<(TypeId, Probe)>> = RwLock::new(Vec::new());

fn probe<T: HasClass>(err: &(dyn Error + 'static)) -> Option<Class> {
    err.downcast_ref::<T>().map(HasClass::class)
}

/// Registers `T` so that [`class_of`](crate::class_of) reads its class. Idempotent and cheap to
/// call again; layers call it when they are built.
pub fn register<T: HasClass>() {
    let id = TypeId::of::<T>();
    if PROBES
        .read()
        .unwrap_or_else(|e| e.into_inner())
        .iter()
        .any(|(t, _)| *t == id)
    {
        return;
    }
    let mut probes = PROBES.write().unwrap_or_else(|e| e.into_inner());
    if !probes.iter().any(|(t, _)| *t == id) {
        probes.push((id, probe::<T>));
    }
}

/// The class of `err` itself (not its sources) if its type is registered.
///
/// Only runs on the failure path; takes a read lock that is never held across a call out.
pub(crate) fn registered_class(err: &(dyn Error + 'static)) -> Option<Class> {
    let probes = PROBES.read().unwrap_or_else(|e| e.into_inner());
    probes.iter().find_map(|(_, probe)| probe(err))
}
