//! Health endpoints: `GET /health` (liveness) and `GET /ready` (readiness, from the breakers,
//! routers and checks you register).
//!
//! [`Health`] collects what readiness depends on; serve it as a plain tower service
//! ([`Health::service`]) or, with the `axum` feature, as an axum `Router` (`Health::router`)
//! to merge into your app.
//!
//! - `/health` answers 200 `{"status":"ok"}` while the process serves at all: a liveness probe
//!   restarts a process that stops answering, so it checks nothing else.
//! - `/ready` answers 200 when every required part is ready and 503 otherwise, with a JSON body
//!   that lists each part: `{"status":"ready","checks":[{"kind":"breaker","name":"llm",
//!   "ready":true,"state":"closed"}, ...]}`. A breaker is not ready while open or isolated
//!   (half-open is ready: its probes need traffic to close it, and an open breaker reads
//!   half-open as soon as its open period is over, before any call comes: see
//!   [`BreakerHandle::state`]); a router
//!   (feature `route`) while no endpoint can take calls; your own checks when they say so.
//!
//! Whether an open breaker should take the whole instance out of its load balancer depends on
//! what the breaker guards: a dependency every request needs, yes; one that a few requests
//! use, or one that every instance shares (so that all of them would leave together), rather
//! not. Register those with [`Health::breaker_report_only`]: listed, never blocking.
//!
//! ```
//! use http::Request;
//! use palisade_breaker::BreakerLayer;
//! use palisade_http::health::Health;
//! use tower::ServiceExt;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let breaker = BreakerLayer::new("llm");
//! let health = Health::new().breaker(breaker.handle()).check("warm", || true);
//!
//! let ready = health.service().oneshot(Request::get("/ready").body(()).unwrap()).await.unwrap();
//! assert_eq!(ready.status(), 200);
//! breaker.handle().isolate();
//! let ready = health.service().oneshot(Request::get("/ready").body(()).unwrap()).await.unwrap();
//! assert_eq!(ready.status(), 503);
//! # }
//! ```

use std::convert::Infallible;
use std::fmt;
use std::future::{Ready, ready};
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::header::{ALLOW, CONTENT_TYPE, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use http_body_util::Full;
use palisade_breaker::{BreakerHandle, State};
use palisade_core::ConfigError;
use tower_service::Service;

use crate::respond::json_string;

/// One part's readiness, as `/ready` lists it.
#[derive(Clone, Debug, PartialEq)]
pub struct Part {
    /// `breaker`, `route` or `check`.
    pub kind: &'static str,
    /// Its name.
    pub name: String,
    /// Whether it is ready.
    pub ready: bool,
    /// Whether its readiness counts toward the instance's.
    pub required: bool,
    /// More fields for the JSON object, already encoded (`"state":"open"`), or empty.
    pub detail: String,
}

type Probe = Arc<dyn Fn() -> Part + Send + Sync>;

/// What readiness depends on; cheap to clone (the parts are shared).
#[derive(Clone, Default)]
pub struct Health {
    parts: Vec<Probe>,
    health_path: Option<Arc<str>>,
    ready_path: Option<Arc<str>>,
}

impl fmt::Debug for Health {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Health")
            .field("parts", &self.parts.len())
            .field("health_path", &self.health_path_str())
            .field("ready_path", &self.ready_path_str())
            .finish()
    }
}

fn breaker_part(handle: &BreakerHandle, required: bool) -> Part {
    let metrics = handle.metrics();
    let state = metrics.state;
    let mut detail = format!(r#""state":"{}""#, state.as_str());
    if let Some(after) = metrics.retry_after {
        detail.push_str(&format!(r#","retry_after_ms":{}"#, after.as_millis()));
    }
    Part {
        kind: "breaker",
        name: handle.name().to_owned(),
        ready: !matches!(state, State::Open | State::Isolated),
        required,
        detail,
    }
}

impl Health {
    /// Nothing registered yet: always ready. Paths `/health` and `/ready`.
    pub fn new() -> Self {
        Self::default()
    }

    /// Readiness requires this breaker to be closed, half-open or bypassed.
    pub fn breaker(mut self, handle: BreakerHandle) -> Self {
        self.parts
            .push(Arc::new(move || breaker_part(&handle, true)));
        self
    }

    /// Lists this breaker's state in `/ready` without letting it decide readiness.
    pub fn breaker_report_only(mut self, handle: BreakerHandle) -> Self {
        self.parts
            .push(Arc::new(move || breaker_part(&handle, false)));
        self
    }

    /// Readiness requires `check` to return `true` (it runs on every `/ready` request: keep
    /// it cheap, reading state that something else keeps up to date).
    pub fn check<F>(mut self, name: impl Into<String>, check: F) -> Self
    where
        F: Fn() -> bool + Send + Sync + 'static,
    {
        let name = name.into();
        self.parts.push(Arc::new(move || Part {
            kind: "check",
            name: name.clone(),
            ready: check(),
            required: true,
            detail: String::new(),
        }));
        self
    }

    /// Readiness requires this router to have an endpoint that can take calls
    /// (`RouteHandle::is_ready`); `/ready` lists each endpoint's state, share and ejection.
    #[cfg(feature = "route")]
    #[cfg_attr(docsrs, doc(cfg(feature = "route")))]
    pub fn route<K>(
        mut self,
        name: impl Into<String>,
        handle: palisade_route::RouteHandle<K>,
    ) -> Self
    where
        K: Clone + fmt::Display + Send + Sync + 'static,
    {
        let name = name.into();
        self.parts.push(Arc::new(move || {
            let endpoints: Vec<String> = handle
                .status()
                .iter()
                .map(|e| {
                    format!(
                        r#"{{"key":{},"state":"{}","share":{:.3},"ejected":{}}}"#,
                        json_string(&e.key.to_string()),
                        e.state.as_str(),
                        e.traffic_ratio,
                        e.ejected
                    )
                })
                .collect();
            Part {
                kind: "route",
                name: name.clone(),
                ready: handle.is_ready(),
                required: true,
                detail: format!(r#""endpoints":[{}]"#, endpoints.join(",")),
            }
        }));
        self
    }

    /// Serves liveness at `path` instead of `/health`: a literal path, checked by
    /// [`validate`](Self::validate) (and by `router`).
    pub fn health_path(mut self, path: impl Into<Arc<str>>) -> Self {
        self.health_path = Some(path.into());
        self
    }

    /// Serves readiness at `path` instead of `/ready`: a literal path, checked by
    /// [`validate`](Self::validate) (and by `router`).
    pub fn ready_path(mut self, path: impl Into<Arc<str>>) -> Self {
        self.ready_path = Some(path.into());
        self
    }

    /// Checks the two paths: each must be a literal URI path that starts with `/` (no query,
    /// no fragment, no space), with no `{`, `}` and no segment starting with `:` or `*`
    /// (which routers such as axum read as captures and wildcards, or refuse), and the two
    /// must differ. A path that breaks these would never be matched by
    /// [`service`](Self::service), and would make axum panic when `router` adds it.
    ///
    /// # Errors
    /// A [`ConfigError`] naming `health_path` or `ready_path` and the rule it breaks.
    ///
    /// ```
    /// use palisade_http::health::Health;
    ///
    /// assert!(Health::new().health_path("/healthz").validate().is_ok());
    /// let err = Health::new().ready_path("readyz").validate().unwrap_err();
    /// assert_eq!(err.field(), "ready_path");
    /// let err = Health::new().ready_path("/health").validate().unwrap_err();
    /// assert_eq!(err.rule(), "must differ from health_path (`/health`)");
    /// ```
    pub fn validate(&self) -> Result<(), ConfigError> {
        check_path("health_path", self.health_path_str())?;
        check_path("ready_path", self.ready_path_str())?;
        if self.health_path_str() == self.ready_path_str() {
            return Err(ConfigError::new(
                "ready_path",
                format!(
                    "must differ from health_path (`{}`)",
                    self.health_path_str()
                ),
            ));
        }
        Ok(())
    }

    fn health_path_str(&self) -> &str {
        self.health_path.as_deref().unwrap_or("/health")
    }

    fn ready_path_str(&self) -> &str {
        self.ready_path.as_deref().unwrap_or("/ready")
    }

    /// Every registered part, as it is now.
    pub fn parts(&self) -> Vec<Part> {
        self.parts.iter().map(|p| p()).collect()
    }

    /// Whether every required part is ready.
    pub fn is_ready(&self) -> bool {
        self.parts().iter().all(|p| p.ready || !p.required)
    }

    /// The readiness response: its status (200 or 503) and JSON body.
    pub fn readiness(&self) -> (StatusCode, String) {
        let parts = self.parts();
        let ready = parts.iter().all(|p| p.ready || !p.required);
        let listed: Vec<String> = parts
            .iter()
            .map(|p| {
                let mut o = format!(
                    r#"{{"kind":"{}","name":{},"ready":{},"required":{}"#,
                    p.kind,
                    json_string(&p.name),
                    p.ready,
                    p.required
                );
                if !p.detail.is_empty() {
                    o.push(',');
                    o.push_str(&p.detail);
                }
                o.push('}');
                o
            })
            .collect();
        let body = format!(
            r#"{{"status":"{}","checks":[{}]}}"#,
            if ready { "ready" } else { "not_ready" },
            listed.join(",")
        );
        let status = if ready {
            StatusCode::OK
        } else {
            StatusCode::SERVICE_UNAVAILABLE
        };
        (status, body)
    }

    /// The liveness response: 200 `{"status":"ok"}`.
    pub fn liveness(&self) -> (StatusCode, String) {
        (StatusCode::OK, r#"{"status":"ok"}"#.to_owned())
    }

    /// The endpoints as a tower service: `GET`/`HEAD` on the two paths, 404 elsewhere, 405 with
    /// `Allow: GET, HEAD` for other methods.
    pub fn service(&self) -> HealthService {
        HealthService {
            health: Arc::new(self.clone()),
        }
    }

    /// The endpoints as an axum `Router`, to merge into an app
    /// (`app.merge(health.router()?)`).
    ///
    /// The two paths are served by [`service`](Self::service), so the answers are the same
    /// byte for byte: a method other than `GET` or `HEAD` gets its 405 with `Allow: GET, HEAD`
    /// and a JSON body, not axum's own (empty) 405.
    ///
    /// # Errors
    /// A [`ConfigError`] from [`validate`](Self::validate) for paths axum would refuse (it
    /// panics on a path without a leading `/`, on one given twice, on a segment starting with
    /// `:` or `*`) or read as a pattern.
    #[cfg(feature = "axum")]
    #[cfg_attr(docsrs, doc(cfg(feature = "axum")))]
    pub fn router<S: Clone + Send + Sync + 'static>(&self) -> Result<axum::Router<S>, ConfigError> {
        self.validate()?;
        let service = self.service();
        Ok(axum::Router::new()
            .route_service(self.health_path_str(), service.clone())
            .route_service(self.ready_path_str(), service))
    }
}

/// Whether `path` is a literal URI path a router matches as written (see
/// [`Health::validate`]); `field` names it in the error.
fn check_path(field: &'static str, path: &str) -> Result<(), ConfigError> {
    let rule = if !path.starts_with('/') {
        "must start with `/`"
    } else if !http::uri::PathAndQuery::try_from(path)
        .is_ok_and(|p| p.path() == path && p.query().is_none())
    {
        "must be a URI path alone: no query, fragment, space or control character"
    } else if path.contains(['{', '}']) || path.split('/').any(|s| s.starts_with([':', '*'])) {
        "must be a literal path: no `{`, `}` or segment starting with `:` or `*`"
    } else {
        return Ok(());
    };
    Err(ConfigError::new(field, format!("{rule} (`{path}`)")))
}

fn json<B: From<String>>(status: StatusCode, body: String) -> Response<B> {
    let mut response = Response::new(B::from(body));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

/// [`Health`] as a tower service; see [`Health::service`].
#[derive(Clone, Debug)]
pub struct HealthService {
    health: Arc<Health>,
}

impl<B> Service<Request<B>> for HealthService {
    type Response = Response<Full<Bytes>>;
    type Error = Infallible;
    type Future = Ready<Result<Self::Response, Infallible>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let path = req.uri().path();
        let live = path == self.health.health_path_str();
        if !live && path != self.health.ready_path_str() {
            return ready(Ok(json(
                StatusCode::NOT_FOUND,
                r#"{"error":"not found"}"#.to_owned(),
            )));
        }
        if req.method() != Method::GET && req.method() != Method::HEAD {
            // RFC 9110 §15.5.6: a 405 lists the methods the resource supports.
            let mut response = json(
                StatusCode::METHOD_NOT_ALLOWED,
                r#"{"error":"method not allowed"}"#.to_owned(),
            );
            response
                .headers_mut()
                .insert(ALLOW, HeaderValue::from_static("GET, HEAD"));
            return ready(Ok(response));
        }
        // Probed only for a request that gets the answer.
        let (status, body) = if live {
            self.health.liveness()
        } else {
            self.health.readiness()
        };
        ready(Ok(json(status, body)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;
    use palisade_breaker::BreakerLayer;
    use std::sync::atomic::{AtomicBool, Ordering};
    use tower::ServiceExt;

    async fn get(health: &Health, path: &str) -> (u16, String) {
        let r = health
            .service()
            .oneshot(Request::get(path).body(()).unwrap())
            .await
            .unwrap();
        let status = r.status().as_u16();
        let body = r.into_body().collect().await.unwrap().to_bytes();
        (status, String::from_utf8(body.to_vec()).unwrap())
    }

    #[test]
    fn debug_shows_the_parts_and_paths() {
        let health = Health::new()
            .check("a", || true)
            .check("b", || true)
            .ready_path("/readyz");
        assert_eq!(
            format!("{health:?}"),
            r#"Health { parts: 2, health_path: "/health", ready_path: "/readyz" }"#
        );
    }

    #[tokio::test(start_paused = true)]
    async fn readiness_follows_breakers_and_checks() {
        let llm = BreakerLayer::new("llm");
        let search = BreakerLayer::new("search");
        let warm = Arc::new(AtomicBool::new(true));
        let w = warm.clone();
        let health = Health::new()
            .breaker(llm.handle())
            .breaker_report_only(search.handle())
            .check("cache \"warm\"", move || w.load(Ordering::SeqCst));

        assert_eq!(
            get(&health, "/health").await,
            (200, r#"{"status":"ok"}"#.to_owned())
        );
        let (status, body) = get(&health, "/ready").await;
        assert_eq!(status, 200);
        assert_eq!(
            body,
            r#"{"status":"ready","checks":[{"kind":"breaker","name":"llm","ready":true,"required":true,"state":"closed"},{"kind":"breaker","name":"search","ready":true,"required":false,"state":"closed"},{"kind":"check","name":"cache \"warm\"","ready":true,"required":true}]}"#
        );

        // A report-only breaker never blocks readiness.
        search.handle().isolate();
        let (status, body) = get(&health, "/ready").await;
        assert_eq!(status, 200, "{body}");
        assert!(
            body.contains(r#""name":"search","ready":false,"required":false,"state":"isolated""#)
        );

        llm.handle().trip();
        let (status, body) = get(&health, "/ready").await;
        assert_eq!(status, 503);
        assert!(body.starts_with(r#"{"status":"not_ready""#), "{body}");
        assert!(
            body.contains(
                r#""name":"llm","ready":false,"required":true,"state":"open","retry_after_ms":"#
            ),
            "{body}"
        );
        assert!(!health.is_ready());

        llm.handle().reset();
        assert!(health.is_ready());
        warm.store(false, Ordering::SeqCst);
        assert_eq!(get(&health, "/ready").await.0, 503);
    }

    #[tokio::test(start_paused = true)]
    async fn readiness_recovers_once_the_open_period_ends_with_no_calls() {
        use palisade_core::{BoxError, ClassifyLayer, DefaultClassifier};
        use std::time::Duration;
        use tower::{Layer, Service, service_fn};

        // A load balancer stops sending traffic to an instance whose /ready fails, so no call
        // comes to move the breaker on: its open period ending must be enough.
        let llm = BreakerLayer::new("llm");
        let handle = llm.handle();
        let health = Health::new().breaker(handle.clone());
        let mut svc = llm.layer(ClassifyLayer::new(DefaultClassifier::default()).layer(
            service_fn(|_: ()| async { Err::<(), BoxError>("503 service unavailable".into()) }),
        ));
        while handle.state() != State::Open {
            let _ = svc.ready().await.unwrap().call(()).await;
        }
        let (status, body) = get(&health, "/ready").await;
        assert_eq!(status, 503);
        assert!(
            body.contains(
                r#""name":"llm","ready":false,"required":true,"state":"open","retry_after_ms":"#
            ),
            "{body}"
        );

        // Ten minutes with no call: half-open, ready, so that traffic comes back to probe it.
        tokio::time::sleep(Duration::from_secs(600)).await;
        let (status, body) = get(&health, "/ready").await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(
            body,
            r#"{"status":"ready","checks":[{"kind":"breaker","name":"llm","ready":true,"required":true,"state":"half_open"}]}"#
        );
        assert!(health.is_ready());

        // The first call back is the probe: still failing, the breaker re-opens and the
        // instance is not ready again, until that period ends in turn.
        let _ = svc.ready().await.unwrap().call(()).await;
        assert_eq!(handle.metrics().reopens, 1);
        assert_eq!(get(&health, "/ready").await.0, 503);
        tokio::time::sleep(Duration::from_secs(600)).await;
        assert_eq!(get(&health, "/ready").await.0, 200);
    }

    #[tokio::test]
    async fn paths_and_methods() {
        let health = Health::new().health_path("/livez").ready_path("/readyz");
        assert_eq!(get(&health, "/livez").await.0, 200);
        assert_eq!(get(&health, "/readyz").await.0, 200);
        assert_eq!(get(&health, "/health").await.0, 404);
        let r = health
            .service()
            .oneshot(Request::post("/readyz").body(()).unwrap())
            .await
            .unwrap();
        assert_eq!(r.status(), 405);
        assert_eq!(r.headers()[ALLOW], "GET, HEAD");
        let r = health
            .service()
            .oneshot(Request::head("/readyz").body(()).unwrap())
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
    }

    #[tokio::test]
    async fn a_405_lists_the_allowed_methods() {
        // RFC 9110 §15.5.6: a 405 must say which methods the resource supports.
        let health = Health::new();
        for path in ["/ready", "/health"] {
            for method in [Method::POST, Method::PUT, Method::DELETE, Method::OPTIONS] {
                let r = health
                    .service()
                    .oneshot(
                        Request::builder()
                            .method(method.clone())
                            .uri(path)
                            .body(())
                            .unwrap(),
                    )
                    .await
                    .unwrap();
                assert_eq!(r.status(), 405, "{method} {path}");
                assert_eq!(
                    r.headers().get(ALLOW).map(HeaderValue::as_bytes),
                    Some(&b"GET, HEAD"[..]),
                    "{method} {path}"
                );
            }
        }
    }

    /// Paths a router cannot take as written are a [`ConfigError`] naming the path's field,
    /// not axum's panic when `router` adds them (a path without its `/`, the same path for
    /// both, a capture or a wildcard) and not a service that never matches (a query).
    #[test]
    fn paths_a_router_cannot_take_are_an_error_naming_them() {
        let rule = |h: Health| {
            h.validate()
                .map_err(|e| (e.field().to_owned(), e.rule().to_owned()))
        };
        let err = |field: &str, rule: &str| Err((field.to_owned(), rule.to_owned()));
        assert_eq!(rule(Health::new()), Ok(()));
        assert_eq!(
            rule(Health::new().health_path("/livez").ready_path("/v1/readyz")),
            Ok(())
        );
        assert_eq!(
            rule(Health::new().health_path("healthz")),
            err("health_path", "must start with `/` (`healthz`)")
        );
        assert_eq!(
            rule(Health::new().ready_path("")),
            err("ready_path", "must start with `/` (``)")
        );
        assert_eq!(
            rule(Health::new().health_path("/ready")),
            err("ready_path", "must differ from health_path (`/ready`)")
        );
        let query = "must be a URI path alone: no query, fragment, space or control character";
        for path in ["/ready?full=1", "/re ady", "/ready#top"] {
            assert_eq!(
                rule(Health::new().ready_path(path)),
                err("ready_path", &format!("{query} (`{path}`)"))
            );
        }
        let literal = "must be a literal path: no `{`, `}` or segment starting with `:` or `*`";
        for path in ["/{name}", "/x/:id", "/*rest", "/a}"] {
            assert_eq!(
                rule(Health::new().health_path(path)),
                err("health_path", &format!("{literal} (`{path}`)"))
            );
        }
        // `:` and `*` inside a segment are literal.
        assert_eq!(rule(Health::new().health_path("/a:b/c*")), Ok(()));
    }

    /// `router` returns the paths' error where axum would have panicked adding them.
    #[cfg(feature = "axum")]
    #[test]
    fn the_router_refuses_what_axum_would_panic_on() {
        for health in [
            Health::new().health_path("healthz"),
            Health::new().ready_path("/health"),
            Health::new().ready_path("/:id"),
        ] {
            let err = health.router::<()>().unwrap_err();
            assert!(
                ["health_path", "ready_path"].contains(&err.field()),
                "{err}"
            );
        }
        // What is accepted, axum takes without a panic.
        let _: axum::Router = Health::new().health_path("/a:b/c*").router().unwrap();
    }

    /// The axum `Router` answers every request as the tower service does: a wrong method
    /// gets the same 405, `Allow: GET, HEAD` and JSON body, not axum's own empty 405.
    #[cfg(feature = "axum")]
    #[tokio::test]
    async fn the_router_answers_as_the_service_does() {
        let health = Health::new().check("warm", || true).ready_path("/readyz");
        let router: axum::Router = health.router().unwrap();
        for path in ["/readyz", "/health"] {
            for method in [
                Method::GET,
                Method::HEAD,
                Method::POST,
                Method::PUT,
                Method::DELETE,
                Method::OPTIONS,
            ] {
                let request = || {
                    Request::builder()
                        .method(method.clone())
                        .uri(path)
                        .body(axum::body::Body::empty())
                        .unwrap()
                };
                let ours = health.service().oneshot(request()).await.unwrap();
                let axum = router.clone().oneshot(request()).await.unwrap();
                assert_eq!(axum.status(), ours.status(), "{method} {path}");
                for name in [ALLOW, CONTENT_TYPE] {
                    assert_eq!(
                        axum.headers().get(&name),
                        ours.headers().get(&name),
                        "{method} {path}: {name}"
                    );
                }
                let ours = ours.into_body().collect().await.unwrap().to_bytes();
                let axum = axum.into_body().collect().await.unwrap().to_bytes();
                if method != Method::HEAD {
                    assert_eq!(axum, ours, "{method} {path}");
                }
            }
        }
        let r = router
            .oneshot(
                Request::post("/readyz")
                    .body(axum::body::Body::empty())
                    .unwrap(),
            )
            .await
            .unwrap();
        assert_eq!(r.status(), 405);
        assert_eq!(r.headers()[ALLOW], "GET, HEAD");
        let body = r.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(body, r#"{"error":"method not allowed"}"#);
    }

    #[cfg(feature = "route")]
    #[tokio::test(start_paused = true)]
    async fn routes_list_their_endpoints() {
        use palisade_core::{ClassifyLayer, DefaultClassifier};
        use palisade_route::Route;
        use tower::{Layer, Service, service_fn};

        let replica = |up: bool| {
            ClassifyLayer::new(DefaultClassifier::default()).layer(service_fn(
                move |_: ()| async move {
                    if up {
                        Ok::<_, palisade_core::BoxError>(())
                    } else {
                        Err("503 service unavailable".into())
                    }
                },
            ))
        };
        let mut route = Route::new([replica(true), replica(false)]);
        let health = Health::new().route("llm", route.handle());
        let (status, body) = get(&health, "/ready").await;
        assert_eq!(status, 200);
        assert!(body.contains(r#"{"kind":"route","name":"llm","ready":true,"required":true,"endpoints":[{"key":"0","state":"healthy","share":"#), "{body}");
        for _ in 0..40 {
            let _ = route.ready().await.unwrap().call(()).await;
        }
        let (status, body) = get(&health, "/ready").await;
        // Replica 1 is ejected; replica 0 still serves: ready.
        assert_eq!(status, 200, "{body}");
        assert!(
            body.contains(r#""key":"1","#) && body.contains(r#""ejected":true"#),
            "{body}"
        );
        assert_eq!(health.is_ready(), route.handle().is_ready());
    }
}
