//! The endpoint set that every clone of a router shares, and the discovery that feeds it.
//!
//! One [`Set`] per router, behind an `Arc` that all its clones hold. Discovery changes are
//! applied here, once, by whichever instance polls discovery first after the stream woke; each
//! instance notices a new set, and a woken stream, through one atomic load of
//! [`Set::state`] and then refreshes its own copy (see `Route::sync`). Why no spawned task: see the crate docs,
//! [Discovery](crate#discovery).

use std::fmt;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, TryLockError};
use std::task::{Context, Poll, Wake, Waker};

use palisade_core::BoxError;
use palisade_core::sync::atomic::{AtomicU64, Ordering};
use tokio::time::Instant;
use tower::discover::{Change, Discover};

use crate::endpoint::{EndpointState, Lanes, lane_refs, ms_since};
use crate::health::Health;
use crate::service::Shared;

/// Ids for the services discovery gives, process-wide (see [`Endpoint::id`]). Std's atomic
/// even in loom builds, as the endpoints' tokens.
static NEXT_ID: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

/// One endpoint as the router sees it.
pub(crate) struct Endpoint<K, S> {
    pub(crate) key: K,
    /// Names this endpoint's service, as given by one insert: a new insert of the same key
    /// keeps the endpoint's state (and its token) but gives a new id, which is how a router
    /// instance knows to drop its copy of the old service (see `Route::refresh`).
    pub(crate) id: u64,
    /// The endpoint's service as discovery gave it, which each router instance clones to call
    /// its own copy. Locked only to take such a clone (never on the per-call path); behind a
    /// lock so that the shared list, and so the router, is `Send` for any `Send` service, not
    /// only `Sync` ones (tower's `BoxCloneService` is not `Sync`).
    svc: Mutex<S>,
    pub(crate) state: Arc<EndpointState>,
    /// One reference to `state` per lane; a call holds its router instance's.
    pub(crate) lanes: Lanes,
}

impl<K, S: Clone> Endpoint<K, S> {
    /// A fresh clone of the endpoint's service.
    pub(crate) fn service(&self) -> S {
        lock(&self.svc).clone()
    }
}

impl<K: Clone, S: Clone> Clone for Endpoint<K, S> {
    fn clone(&self) -> Self {
        Endpoint {
            key: self.key.clone(),
            id: self.id,
            svc: Mutex::new(self.service()),
            state: self.state.clone(),
            lanes: self.lanes.clone(),
        }
    }
}

impl<K, S> AsRef<EndpointState> for Endpoint<K, S> {
    fn as_ref(&self) -> &EndpointState {
        &self.state
    }
}

/// The list every instance copies.
pub(crate) type List<K, S> = Arc<Vec<Endpoint<K, S>>>;

/// Locks, ignoring poison: every writer leaves the data consistent between statements.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// In [`Set::state`]: the stream woke (it may yield), so the next `poll_ready` of any
/// instance polls it. The other bits count the versions of the set, in steps of [`VERSION`].
pub(crate) const WOKEN: u64 = 1;
/// One version of the set, in [`Set::state`].
const VERSION: u64 = 2;

/// The waker discovery is polled with: it marks the stream as having something to say, and
/// wakes the task that polled it last (as a router that owns its stream would be woken).
#[derive(Debug, Default)]
struct Wakeup {
    /// [`WOKEN`], and the set's version above it: what every `poll_ready` loads.
    state: AtomicU64,
    /// The task of the instance that drove discovery last.
    task: Mutex<Option<Waker>>,
}

impl Wake for Wakeup {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.state.fetch_or(WOKEN, Ordering::AcqRel);
        let task = lock(&self.task).take();
        if let Some(task) = task {
            task.wake();
        }
    }
}

/// A way to move a set's version without its discovery types (for the router's handle).
#[derive(Debug)]
pub(crate) struct Versions(Arc<Wakeup>);

impl Versions {
    /// A new version: every instance refreshes its copy of the list (and configuration) at its
    /// next `poll_ready`. Bump the router's epoch after it (see [`Set::publish`]).
    pub(crate) fn bump(&self) {
        self.0.state.fetch_add(VERSION, Ordering::AcqRel);
    }
}

/// The endpoint set shared by every clone of a router, and its discovery stream.
pub(crate) struct Set<D: Discover> {
    /// The current endpoints: written only under the `discover` lock (or while building), read
    /// by an instance only when the version in [`state`](Self::state) moved, which happens
    /// after each batch of changes is written here and before the router's epoch moves.
    endpoints: Mutex<List<D::Key, D::Service>>,
    /// The discovery stream; `None` once it ended, and for a fixed list.
    discover: Mutex<Option<D>>,
    wakeup: Arc<Wakeup>,
    /// `wakeup` as a waker, made once.
    waker: Waker,
    /// Discovery errors seen so far (each one logged).
    errors: AtomicU64,
}

impl<D: Discover> Set<D> {
    pub(crate) fn new(discover: Option<D>) -> Self {
        let wakeup = Arc::new(Wakeup {
            // A stream is polled once before anything woke it, as any stream is.
            state: AtomicU64::new(if discover.is_some() { WOKEN } else { 0 }),
            task: Mutex::new(None),
        });
        Set {
            endpoints: Mutex::new(Arc::new(Vec::new())),
            discover: Mutex::new(discover),
            waker: Waker::from(wakeup.clone()),
            wakeup,
            errors: AtomicU64::new(0),
        }
    }

    /// The set's version and whether the stream woke ([`WOKEN`]): one atomic load, what each
    /// instance reads on every `poll_ready`. Load the router's epoch before it (see
    /// `Route::sync`).
    #[inline]
    pub(crate) fn state(&self) -> u64 {
        self.wakeup.state.load(Ordering::Acquire)
    }

    /// The current list, at least as new as the last [`state`](Self::state) read.
    pub(crate) fn list(&self) -> List<D::Key, D::Service> {
        lock(&self.endpoints).clone()
    }

    /// Discovery errors seen so far.
    #[cfg(test)]
    #[cfg(not(palisade_loom))]
    pub(crate) fn errors(&self) -> u64 {
        self.errors.load(Ordering::Relaxed)
    }
}

impl<D> Set<D>
where
    D: Discover + Unpin,
    D::Key: Clone + PartialEq + fmt::Debug,
    D::Service: Clone,
    D::Error: Into<BoxError>,
{
    /// Polls discovery and applies what it yields, unless another instance is doing so now (it
    /// applies what there is; anything that arrives after it looked wakes the stream again).
    /// `task` is woken when discovery next has something to say.
    pub(crate) fn drive(&self, shared: &Shared<D::Key>, task: &Waker) {
        let mut discover = match self.discover.try_lock() {
            Ok(guard) => guard,
            Err(TryLockError::Poisoned(poisoned)) => poisoned.into_inner(),
            Err(TryLockError::WouldBlock) => return,
        };
        // Cleared before polling: a wake from now on is seen by the next poll_ready.
        if self.wakeup.state.fetch_and(!WOKEN, Ordering::AcqRel) & WOKEN == 0 {
            return;
        }
        {
            let mut registered = lock(&self.wakeup.task);
            if !registered.as_ref().is_some_and(|t| t.will_wake(task)) {
                *registered = Some(task.clone());
            }
        }
        let mut cx = Context::from_waker(&self.waker);
        let mut changed = false;
        while let Some(stream) = discover.as_mut() {
            match Pin::new(stream).poll_discover(&mut cx) {
                Poll::Ready(Some(Ok(Change::Insert(key, svc)))) => {
                    let slow_start = shared.config.load().slow_start;
                    self.insert(shared, key, svc, 0, slow_start);
                    changed = true;
                }
                Poll::Ready(Some(Ok(Change::Remove(key)))) => changed |= self.remove(shared, &key),
                Poll::Ready(Some(Err(e))) => {
                    let e: BoxError = e.into();
                    let n = self.errors.fetch_add(1, Ordering::Relaxed) + 1;
                    tracing::warn!(
                        error = %e,
                        errors = n,
                        "endpoint discovery failed; routing over the endpoints it gave so far"
                    );
                    // The stream may have more to say: the next poll_ready asks again, rather
                    // than this one spinning on a stream that keeps failing.
                    self.wakeup.state.fetch_or(WOKEN, Ordering::AcqRel);
                    break;
                }
                Poll::Ready(None) => {
                    tracing::debug!("endpoint discovery ended; keeping the last endpoint set");
                    *discover = None;
                }
                Poll::Pending => break,
            }
        }
        if changed {
            self.publish(shared);
        }
    }
}

impl<D: Discover> Set<D>
where
    D::Key: Clone + PartialEq + fmt::Debug,
    D::Service: Clone,
{
    /// Adds an endpoint, or updates the one with the same key in place: it takes what this
    /// insert gives, the service (calls in flight to the old one finish normally) and the key
    /// itself (equal to the old one, but it may carry more: status, health checks and logs see
    /// the new one), and keeps its state: its health, ejections, cool-down, ramp, outlier
    /// statistics and token. Envoy likewise keeps a re-announced host's outlier state and
    /// updates the weight, metadata and priority the announcement carries (see
    /// [Discovery](crate#discovery)). Visible to the instances once [`publish`](Self::publish)ed.
    ///
    /// `slow_start` is for a new endpoint only: a known one is not new, and its ramp, if any,
    /// goes on. `tier` cannot differ for a known key: a fixed list's keys are positions,
    /// inserted once each, and discovery inserts every endpoint in tier 0.
    pub(crate) fn insert(
        &self,
        shared: &Shared<D::Key>,
        key: D::Key,
        svc: D::Service,
        tier: u8,
        slow_start: bool,
    ) {
        let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
        let mut registry = lock(&shared.registry);
        let mut list = lock(&self.endpoints);
        if let Some(i) = list.iter().position(|e| e.key == key) {
            let known = &mut Arc::make_mut(&mut list)[i];
            debug_assert_eq!(
                known.state.tier, tier,
                "an insert of a known key in another tier"
            );
            let label = format!("{key:?}");
            tracing::debug!(
                endpoint = %label,
                was = %known.state.label(),
                "endpoint's service and key replaced, its state kept"
            );
            if let Some(entry) = registry
                .iter_mut()
                .find(|(_, state)| Arc::ptr_eq(state, &known.state))
            {
                entry.0 = key.clone();
            }
            known.state.relabel(label);
            known.key = key;
            known.id = id;
            known.svc = Mutex::new(svc);
            // Instances waiting for the old service's readiness take the new one.
            known.state.wake_every_waiter();
            return;
        }
        let now = ms_since(shared.origin, Instant::now());
        let health = if slow_start {
            Health::ramping(now)
        } else {
            Health::HEALTHY
        };
        let state = Arc::new(EndpointState::new(
            tier,
            format!("{key:?}"),
            health,
            shared.config.clone(),
            shared.origin,
            shared.epoch.clone(),
        ));
        tracing::debug!(endpoint = %state.label(), tier, slow_start, "endpoint added");
        Arc::make_mut(&mut list).push(Endpoint {
            key: key.clone(),
            id,
            svc: Mutex::new(svc),
            lanes: lane_refs(&state),
            state: state.clone(),
        });
        registry.push((key, state));
    }

    /// Removes an endpoint; its calls in flight keep its state alive and finish normally.
    /// Returns whether there was one.
    fn remove(&self, shared: &Shared<D::Key>, key: &D::Key) -> bool {
        let mut registry = lock(&shared.registry);
        let mut list = lock(&self.endpoints);
        let Some(i) = list.iter().position(|e| e.key == *key) else {
            return false;
        };
        let gone = Arc::make_mut(&mut list).remove(i);
        tracing::debug!(endpoint = %gone.state.label(), "endpoint removed");
        registry.retain(|(k, _)| k != key);
        // Every instance waiting for its readiness, not only the one driving discovery (whose
        // task the set's wakeup holds): the endpoint is out of every instance's next pick,
        // which a parked instance would otherwise make only once the removed service got
        // ready, maybe never.
        gone.state.wake_every_waiter();
        true
    }

    /// Makes every instance take the set again at its next `poll_ready` (a new version of the
    /// same endpoints), and with it the configuration: see `RouteHandle::reconfigure`.
    pub(crate) fn versions(&self) -> Versions {
        Versions(self.wakeup.clone())
    }

    /// Makes the changes so far visible: the set's version first, then the router's epoch,
    /// so that an instance that sees the new epoch also sees the new version (and does not
    /// mark an old list as plainly healthy at the new epoch).
    pub(crate) fn publish(&self, shared: &Shared<D::Key>) {
        self.wakeup.state.fetch_add(VERSION, Ordering::AcqRel);
        shared.epoch.fetch_add(1, Ordering::AcqRel);
    }
}
