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
/// Only runs on the failure path. The read lock is taken for each probe in turn and let go
/// before the probe runs: a probe runs the type's own `class`, which may call `class_of`
/// again (a wrapper asking for the class of what it wraps), and holding the lock across it
/// would take it twice on one thread, which deadlocks as soon as a writer (a type registered
/// on another thread) queues in between. Probes are only ever appended, so an index stays
/// the same probe.
pub(crate) fn registered_class(err: &(dyn Error + 'static)) -> Option<Class> {
    (0..)
        .map_while(|i| {
            let probes = PROBES.read().unwrap_or_else(|e| e.into_inner());
            probes.get(i).map(|(_, probe)| *probe)
        })
        .find_map(|probe| probe(err))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{BoxError, Category, class_of};
    use std::sync::mpsc;
    use std::time::Duration;

    /// A wrapper error that, like palisade's own `AfterTimeouts`, takes its class from the error
    /// it wraps with `class_of`.
    #[derive(Debug)]
    struct Wrapper(BoxError);
    impl std::fmt::Display for Wrapper {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            std::fmt::Display::fmt(&self.0, f)
        }
    }
    impl Error for Wrapper {}
    impl HasClass for Wrapper {
        fn class(&self) -> Class {
            // Another thread registers a type of its own now (palisade-http registers its
            // types lazily, on the first error of each kind): wait until its writer queues.
            let writer = std::thread::spawn(register::<Late>);
            while PROBES.try_read().is_ok() {
                std::hint::spin_loop();
                if writer.is_finished() {
                    break;
                }
            }
            class_of(&self.0)
        }
    }

    #[derive(Debug)]
    struct Late;
    impl std::fmt::Display for Late {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("late")
        }
    }
    impl Error for Late {}
    impl HasClass for Late {
        fn class(&self) -> Class {
            Class::new(Category::NotFound)
        }
    }

    /// A registered type whose `class` calls `class_of` (as `AfterTimeouts` does) while another
    /// thread registers a type: the registry's lock is not held across the call, which took it
    /// twice on one thread and hung both threads once the writer queued.
    #[test]
    fn a_registered_class_that_reads_class_of_while_a_type_registers_does_not_deadlock() {
        register::<Wrapper>();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let err: BoxError = Box::new(Wrapper(
                std::io::Error::from(std::io::ErrorKind::ConnectionRefused).into(),
            ));
            let _ = tx.send(class_of(&err).category);
        });
        // A watchdog only, so that a deadlock fails the test rather than hanging the run: the
        // classification takes microseconds when it does not hang.
        let got = rx.recv_timeout(Duration::from_secs(10));
        assert_eq!(
            got,
            Ok(Category::Network),
            "class_of deadlocked on the registry's lock"
        );
    }
}
