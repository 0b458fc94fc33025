//! Failing responses' bodies read for classification: [`PeekLayer`], [`Peek`], [`PeekedBody`],
//! [`BodyExcerpt`].

use std::borrow::Cow;
use std::collections::VecDeque;
use std::fmt;
use std::future::Future;
use std::io::IoSlice;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::{Buf, Bytes, BytesMut};
use http::{Response, StatusCode};
use http_body::{Body, Frame, SizeHint};
use palisade_core::ConfigError;
use pin_project_lite::pin_project;
use tower_layer::Layer;
use tower_service::Service;

use super::replay::after_len;

/// The start of a failing response's body, read by [`Peek`] and kept in the response's
/// extensions, where [`HttpClassifier`](crate::HttpClassifier) reads it (see *The body* in
/// its docs).
///
/// The body itself is not consumed: the caller still reads all of it.
///
/// ```
/// use bytes::Bytes;
/// use palisade_http::body::BodyExcerpt;
///
/// let excerpt = BodyExcerpt::new(Bytes::from_static(b"{\"error\": \"overloaded\"}"), true);
/// assert_eq!(excerpt.text(), "{\"error\": \"overloaded\"}");
/// assert!(excerpt.is_complete());
/// ```
#[derive(Clone, PartialEq, Eq)]
pub struct BodyExcerpt {
    bytes: Bytes,
    complete: bool,
}

impl BodyExcerpt {
    /// An excerpt of `bytes`; `complete` when they are the whole body. (For a client that
    /// reads failing bodies itself and wants [`HttpClassifier`](crate::HttpClassifier) to
    /// read them too: insert it in the response's extensions.)
    pub fn new(bytes: Bytes, complete: bool) -> Self {
        BodyExcerpt { bytes, complete }
    }

    /// The bytes read, at most the [`limit`](PeekLayerBuilder::limit).
    pub fn bytes(&self) -> &Bytes {
        &self.bytes
    }

    /// The bytes read as text, each sequence that is not UTF-8 (a character cut by the
    /// limit, say) replaced by `U+FFFD`.
    pub fn text(&self) -> Cow<'_, str> {
        String::from_utf8_lossy(&self.bytes)
    }

    /// Whether the excerpt is the whole body: the body ended within the limit. `false` when
    /// the limit (or the most frames read) stopped the read, or the body failed while it was
    /// read. A streamed body of exactly the limit reads as not complete unless it said it had
    /// ended (its `is_end_stream`): the read stops at the limit without asking for more.
    pub fn is_complete(&self) -> bool {
        self.complete
    }
}

impl fmt::Debug for BodyExcerpt {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BodyExcerpt")
            .field("text", &self.text())
            .field("complete", &self.complete)
            .finish()
    }
}

/// The statuses whose bodies are read: every status from 400 up, or a set of 4xx and 5xx
/// codes.
#[derive(Clone, Copy, PartialEq, Eq)]
struct Statuses {
    /// Bit `code - 400` for 400..=599, when a set was given.
    set: Option<[u64; 4]>,
}

impl Statuses {
    const ALL: Statuses = Statuses { set: None };

    #[inline]
    fn contains(&self, status: StatusCode) -> bool {
        let code = status.as_u16();
        match &self.set {
            None => code >= 400,
            Some(bits) => {
                let Some(i) = code.checked_sub(400).map(usize::from) else {
                    return false;
                };
                bits.get(i / 64)
                    .is_some_and(|word| word >> (i % 64) & 1 == 1)
            }
        }
    }
}

impl fmt::Debug for Statuses {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.set {
            None => f.write_str("400.."),
            Some(_) => f
                .debug_list()
                .entries(
                    (400..600u16)
                        .filter(|&c| StatusCode::from_u16(c).is_ok_and(|s| self.contains(s))),
                )
                .finish(),
        }
    }
}

/// Reads the start of failing responses' bodies for the classifier: see [`Peek`].
///
/// [`new`](PeekLayer::new) reads up to [`DEFAULT_LIMIT`](PeekLayer::DEFAULT_LIMIT) bytes of
/// the body of every response whose status is 400 or more; [`builder`](PeekLayer::builder)
/// sets the limit and the statuses.
///
/// ```
/// use palisade_http::body::PeekLayer;
///
/// let layer = PeekLayer::builder().limit(4096).statuses([400, 403, 429]).build()?;
/// assert_eq!(layer.limit(), 4096);
///
/// let err = PeekLayer::builder().limit(0).build().unwrap_err();
/// assert_eq!(err.field(), "limit");
/// # Ok::<(), palisade_core::ConfigError>(())
/// ```
#[derive(Clone, Copy, Debug)]
pub struct PeekLayer {
    limit: usize,
    statuses: Statuses,
}

impl PeekLayer {
    /// The most bytes read of a body by default: 8 KiB, several times the longest error
    /// OpenAI, Anthropic or Google send (a JSON object with a message of a few hundred
    /// characters).
    pub const DEFAULT_LIMIT: usize = 8 * 1024;

    /// The largest limit [`PeekLayerBuilder::build`] takes: 1 MiB. The excerpt is read by
    /// the message rules on every failure; a longer one is a body to read, not to classify.
    pub const MAX_LIMIT: usize = 1024 * 1024;

    /// Reads up to [`DEFAULT_LIMIT`](Self::DEFAULT_LIMIT) bytes of the body of every response
    /// whose status is 400 or more.
    pub fn new() -> Self {
        PeekLayer {
            limit: Self::DEFAULT_LIMIT,
            statuses: Statuses::ALL,
        }
    }

    /// A builder for the limit and the statuses.
    pub fn builder() -> PeekLayerBuilder {
        PeekLayerBuilder {
            limit: Self::DEFAULT_LIMIT,
            statuses: None,
        }
    }

    /// The most bytes read of a body.
    pub fn limit(&self) -> usize {
        self.limit
    }
}

impl Default for PeekLayer {
    fn default() -> Self {
        Self::new()
    }
}

impl<S> Layer<S> for PeekLayer {
    type Service = Peek<S>;

    fn layer(&self, inner: S) -> Peek<S> {
        Peek {
            inner,
            limit: self.limit,
            statuses: self.statuses,
        }
    }
}

/// Builds a [`PeekLayer`]; see [`PeekLayer::builder`].
#[derive(Clone, Debug)]
pub struct PeekLayerBuilder {
    limit: usize,
    statuses: Option<Vec<u16>>,
}

impl PeekLayerBuilder {
    /// The most bytes read of a body (default [`PeekLayer::DEFAULT_LIMIT`], 8 KiB; from 1 to
    /// [`PeekLayer::MAX_LIMIT`], 1 MiB).
    pub fn limit(mut self, bytes: usize) -> Self {
        self.limit = bytes;
        self
    }

    /// Reads the bodies of responses with these statuses only (default: every status from 400
    /// up), each a 4xx or 5xx: `[400, 403, 429]` for an API whose server errors say nothing a
    /// status does not.
    pub fn statuses(mut self, codes: impl IntoIterator<Item = u16>) -> Self {
        self.statuses = Some(codes.into_iter().collect());
        self
    }

    /// Builds the layer.
    ///
    /// # Errors
    /// A [`ConfigError`] naming `limit` when it is 0 or more than [`PeekLayer::MAX_LIMIT`];
    /// `statuses` when the set given is empty; `status[i]` when a code is not a 4xx or 5xx, or
    /// is given a second time.
    pub fn build(self) -> Result<PeekLayer, ConfigError> {
        if self.limit == 0 {
            return Err(ConfigError::new("limit", "must be at least 1 byte"));
        }
        if self.limit > PeekLayer::MAX_LIMIT {
            return Err(ConfigError::new(
                "limit",
                format!("must be at most {} bytes (1 MiB)", PeekLayer::MAX_LIMIT),
            ));
        }
        let statuses = match self.statuses {
            None => Statuses::ALL,
            Some(codes) if codes.is_empty() => {
                return Err(ConfigError::new(
                    "statuses",
                    "must name at least one status",
                ));
            }
            Some(codes) => {
                let mut bits = [0u64; 4];
                for (i, code) in codes.into_iter().enumerate() {
                    if !(400..=599).contains(&code) {
                        return Err(ConfigError::new(
                            format!("status[{i}]"),
                            "must be a client or server error status (4xx or 5xx)",
                        ));
                    }
                    let bit = usize::from(code - 400);
                    let word = &mut bits[bit / 64];
                    if *word >> (bit % 64) & 1 == 1 {
                        return Err(ConfigError::new(
                            format!("status[{i}]"),
                            format!("gives status {code} a second time"),
                        ));
                    }
                    *word |= 1 << (bit % 64);
                }
                Statuses { set: Some(bits) }
            }
        };
        Ok(PeekLayer {
            limit: self.limit,
            statuses,
        })
    }
}

/// Reads the start of the body of each failing response (status 400 or more, or the
/// [statuses](PeekLayerBuilder::statuses) chosen) before giving the response on, and keeps
/// it in the response's extensions as a [`BodyExcerpt`], so that
/// [`HttpClassifier`](crate::HttpClassifier) in a classify layer above judges the failure by
/// what the body says too: OpenAI's `429` whose body says `insufficient_quota` is a spent
/// quota, not retried, where without it the 429 is a passing rate limit, retried for nothing.
///
/// The caller gets every byte of the body, in order: the frames read (data and trailers, as
/// the body gave them, less the empty data frames, which carry nothing), then the rest of the
/// body as it streams. A body that fails while it
/// is read gives its frames read, then its error, at the same place.
///
/// # Costs
///
/// A successful response passes through after one status check: nothing is read, allocated
/// or locked, and its body ([`PeekedBody`]) forwards each call to the inner body. A failing
/// one is read frame by frame until `limit` bytes of data have arrived or the body ends, and
/// its excerpt copied (an allocation of at most `limit` bytes, fewer when the body's size
/// hint says it is smaller, and copied to its length when it came out much shorter); the
/// frames read are held, not copied, so one frame larger than the limit is held whole. At most
/// 1024 frames are read (a body sent a byte at a time is read up to 1024 bytes), and empty
/// data frames are dropped (they count toward the 1024). An empty body (its `is_end_stream`) is not read.
///
/// The excerpt is copied from what each data frame shows through
/// [`Buf::chunks_vectored`](bytes::Buf::chunks_vectored). `Bytes` (hyper's, reqwest's and
/// `http-body-util`'s bodies) shows all of itself; a `Buf` of its own that keeps the trait's
/// default shows only its first chunk, and the excerpt then stops at the end of that chunk,
/// marked not [complete](BodyExcerpt::is_complete) (the caller still gets every byte). The body is
/// boxed on this path, so that a body that must stay pinned (a
/// [`GuardedBody`](super::GuardedBody)'s timers) can be read by the future and then moved into
/// the response.
///
/// # Time
///
/// The read is part of the call, and its time is bounded as the call's: by an attempt
/// timeout above the classify layer (the preset's), by the deadline, and by a
/// [`GuardLayer`](super::GuardLayer)'s idle or whole-body timeout below this layer. A failing
/// response is given on when `limit` bytes or the end of its body arrive, whichever is first.
///
/// # Stacking
///
/// Right below the classify layer (below the preset), above
/// [`PropagateDeadline`](crate::deadline::PropagateDeadline) and [`Guard`](super::Guard):
/// `classify → Peek → PropagateDeadline → Guard → the client`.
///
/// # Example
///
/// ```
/// use bytes::Bytes;
/// use http::{Request, Response};
/// use http_body_util::{BodyExt, Full};
/// use palisade::{ServiceBuilderExt, preset};
/// use palisade_core::{BoxError, Category, FailedResponse, class_of};
/// use palisade_http::HttpClassifier;
/// use palisade_http::body::{PeekLayer, PeekedBody};
/// use std::sync::Arc;
/// use std::sync::atomic::{AtomicU32, Ordering};
/// use tower::{ServiceBuilder, ServiceExt, service_fn};
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)]
/// # async fn main() -> Result<(), BoxError> {
/// // OpenAI's answer once the account's credit is spent: a 429, like any rate limit.
/// const SPENT: &str = r#"{"error": {"message": "You exceeded your current quota, please check your plan and billing details.", "type": "insufficient_quota", "param": null, "code": "insufficient_quota"}}"#;
/// let calls = Arc::new(AtomicU32::new(0));
/// let counted = calls.clone();
/// let api = service_fn(move |_: Request<String>| {
///     counted.fetch_add(1, Ordering::SeqCst);
///     async { Ok::<_, BoxError>(Response::builder().status(429).body(Full::new(Bytes::from(SPENT)))?) }
/// });
/// let llm = ServiceBuilder::new()
///     .palisade(preset::recommended("llm").classifier(HttpClassifier::new()).build()?)
///     .layer(PeekLayer::new())
///     .service(api);
///
/// let err = llm.oneshot(Request::new("hi".to_owned())).await.unwrap_err();
/// assert_eq!(calls.load(Ordering::SeqCst), 1, "a spent quota is not retried");
/// let class = class_of(&err);
/// assert_eq!(class.category, Category::RateLimited);
/// assert!(!class.retryable);
/// // Its message says what the server said.
/// assert!(err.to_string().starts_with(r#"HTTP 429 Too Many Requests: {"error": {"message": "You exceeded"#));
/// // The response, body and all, as the server sent it.
/// let response = FailedResponse::<Response<PeekedBody<Full<Bytes>>>>::restore(err).unwrap();
/// assert_eq!(response.into_body().collect().await?.to_bytes(), SPENT);
/// # Ok(()) }
/// ```
///
/// # Readiness
///
/// `poll_ready` is the inner service's.
#[derive(Clone, Debug)]
pub struct Peek<S> {
    inner: S,
    limit: usize,
    statuses: Statuses,
}

impl<S> Peek<S> {
    /// Wraps `inner`, reading up to [`PeekLayer::DEFAULT_LIMIT`] bytes of the body of every
    /// response whose status is 400 or more.
    pub fn new(inner: S) -> Self {
        PeekLayer::new().layer(inner)
    }

    /// The inner service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The inner service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// Unwraps the inner service.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S, Req, B> Service<Req> for Peek<S>
where
    S: Service<Req, Response = Response<B>>,
    B: Body,
{
    type Response = Response<PeekedBody<B>>;
    type Error = S::Error;
    type Future = PeekFuture<S::Future, B>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Req) -> Self::Future {
        PeekFuture {
            state: State::Calling {
                future: self.inner.call(req),
            },
            limit: self.limit,
            statuses: self.statuses,
        }
    }
}

/// A failing response whose body is being read.
struct Reading<B: Body> {
    parts: http::response::Parts,
    body: Pin<Box<B>>,
    frames: VecDeque<Frame<B::Data>>,
    /// Data bytes read so far.
    len: usize,
    /// Frames read so far, empty ones included (those are not kept).
    read: usize,
    excerpt: BytesMut,
    /// Every data byte read so far is in the excerpt (up to the limit): false once a frame's
    /// data was not in view as slices.
    visible: bool,
}

pin_project! {
    /// The response future of [`Peek`].
    pub struct PeekFuture<F, B: Body> {
        #[pin]
        state: State<F, B>,
        limit: usize,
        statuses: Statuses,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<F, B: Body> {
        Calling { #[pin] future: F },
        Reading { read: Option<Reading<B>> },
    }
}

impl<F, B: Body> fmt::Debug for PeekFuture<F, B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match &self.state {
            State::Calling { .. } => "Calling",
            State::Reading { .. } => "Reading",
        };
        f.debug_struct("PeekFuture")
            .field("state", &state)
            .field("limit", &self.limit)
            .finish()
    }
}

/// Copies up to `room` bytes of `data` to `excerpt`; `false` when not all of `data` was in
/// view as slices (a `Buf` that shows only part of itself at once, such as one that shows
/// only its first chunk).
fn copy_into<D: Buf>(excerpt: &mut BytesMut, data: &D, room: usize) -> bool {
    if room == 0 {
        return true;
    }
    let wanted = data.remaining().min(room);
    let mut stack = [IoSlice::new(&[]); 16];
    let n = data.chunks_vectored(&mut stack);
    if n < stack.len() || shown(&stack) >= wanted {
        return copy_slices(excerpt, &stack[..n], data.remaining(), room);
    }
    // More pieces than 16 in view: ask again with room for more (an allocation, on this
    // unusual path only), until the `Buf` shows all it will or enough for the excerpt.
    let mut size = stack.len();
    loop {
        size *= 2;
        let mut heap = vec![IoSlice::new(&[]); size];
        let n = data.chunks_vectored(&mut heap);
        if n < size || shown(&heap) >= wanted || size >= MAX_SLICES {
            return copy_slices(excerpt, &heap[..n], data.remaining(), room);
        }
    }
}

/// The most frames read before the failing response is given on: with one frame per byte
/// (a chunked body sent a byte at a time), the frames held, about a hundred bytes each, would
/// otherwise come to a hundred times the limit.
const MAX_FRAMES: usize = 1024;

/// The most unused capacity an excerpt keeps; one with more is copied to its length.
const SPARE: usize = 1024;

/// The most slices [`copy_into`] asks a `Buf` to show at once.
const MAX_SLICES: usize = 1 << 16;

/// How many bytes `slices` show.
fn shown(slices: &[IoSlice<'_>]) -> usize {
    slices.iter().map(|slice| slice.len()).sum()
}

/// Copies up to `room` bytes of `slices`, which show part or all of a `Buf` of `remaining`
/// bytes, to `excerpt`; `false` when they showed less than all of it and less than `room`.
fn copy_slices(
    excerpt: &mut BytesMut,
    slices: &[IoSlice<'_>],
    remaining: usize,
    room: usize,
) -> bool {
    let mut seen = 0;
    let mut left = room;
    for slice in slices {
        seen += slice.len();
        let take = slice.len().min(left);
        excerpt.extend_from_slice(&slice[..take]);
        left -= take;
        if left == 0 {
            return true;
        }
    }
    seen >= remaining
}

impl<F, B, E> Future for PeekFuture<F, B>
where
    F: Future<Output = Result<Response<B>, E>>,
    B: Body,
{
    type Output = Result<Response<PeekedBody<B>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        loop {
            match this.state.as_mut().project() {
                StateProj::Calling { future } => {
                    let response = ready!(future.poll(cx))?;
                    if !this.statuses.contains(response.status()) || response.body().is_end_stream()
                    {
                        return Poll::Ready(Ok(response.map(PeekedBody::new)));
                    }
                    let (parts, body) = response.into_parts();
                    // Room for the whole excerpt, or for the body when it says it is smaller.
                    let expected = body.size_hint().upper().unwrap_or(u64::MAX);
                    let capacity =
                        usize::try_from(expected).map_or(*this.limit, |n| n.min(*this.limit));
                    this.state.set(State::Reading {
                        read: Some(Reading {
                            parts,
                            body: Box::pin(body),
                            frames: VecDeque::new(),
                            len: 0,
                            read: 0,
                            excerpt: BytesMut::with_capacity(capacity),
                            visible: true,
                        }),
                    });
                }
                StateProj::Reading { read } => {
                    let Some(r) = read.as_mut() else {
                        panic!("`PeekFuture` polled after completion");
                    };
                    // Until `limit` bytes of data, or the end of the body.
                    let (ended, error) = loop {
                        if r.len >= *this.limit || r.read >= MAX_FRAMES {
                            // Not polled again, but it may know it has nothing more.
                            break (r.body.is_end_stream(), None);
                        }
                        match ready!(r.body.as_mut().poll_frame(cx)) {
                            Some(Ok(frame)) => {
                                r.read += 1;
                                if let Some(data) = frame.data_ref() {
                                    if !data.has_remaining() {
                                        // Nothing to keep: an empty frame says nothing the
                                        // caller needs. It still counts toward the most
                                        // frames read, so that a body of nothing but empty
                                        // frames is given on.
                                        continue;
                                    }
                                    if r.visible {
                                        let room = this.limit.saturating_sub(r.excerpt.len());
                                        r.visible = copy_into(&mut r.excerpt, data, room);
                                    }
                                    r.len = r.len.saturating_add(data.remaining());
                                }
                                r.frames.push_back(frame);
                            }
                            Some(Err(e)) => break (true, Some(e)),
                            None => break (true, None),
                        }
                    };
                    let Some(Reading {
                        mut parts,
                        body,
                        frames,
                        len,
                        excerpt,
                        visible,
                        ..
                    }) = read.take()
                    else {
                        panic!("`PeekFuture` polled after completion");
                    };
                    let complete = ended && error.is_none() && visible && len == excerpt.len();
                    // The excerpt lives as long as the error that carries it: a short one
                    // read into room for the whole limit (a body that did not say its size)
                    // is copied out, not kept with the limit's capacity.
                    let excerpt = if excerpt.capacity() - excerpt.len() > SPARE {
                        Bytes::copy_from_slice(&excerpt)
                    } else {
                        excerpt.freeze()
                    };
                    parts.extensions.insert(BodyExcerpt::new(excerpt, complete));
                    let body = PeekedBody {
                        kind: Kind::Peeked {
                            frames,
                            error,
                            body,
                            ended,
                        },
                    };
                    return Poll::Ready(Ok(Response::from_parts(parts, body)));
                }
            }
        }
    }
}

pin_project! {
    /// The body of a response that passed through [`Peek`]: the inner body itself for a
    /// response whose body was not read, else the frames read, then the rest of the inner body.
    ///
    /// Its data and error types are the inner body's, and so are its size hint and its end
    /// (with the frames read counted).
    pub struct PeekedBody<B: Body> {
        #[pin]
        kind: Kind<B>,
    }
}

pin_project! {
    #[project = KindProj]
    enum Kind<B: Body> {
        Inner { #[pin] body: B },
        Peeked {
            frames: VecDeque<Frame<B::Data>>,
            // The inner body's error, after the frames.
            error: Option<B::Error>,
            body: Pin<Box<B>>,
            // The inner body ended or failed: it is not polled again.
            ended: bool,
        },
    }
}

impl<B: Body> PeekedBody<B> {
    /// `body`, unread.
    pub fn new(body: B) -> Self {
        PeekedBody {
            kind: Kind::Inner { body },
        }
    }

    /// Whether the start of this body was read ([`Peek`] read it, and the response carries a
    /// [`BodyExcerpt`]).
    pub fn is_peeked(&self) -> bool {
        matches!(self.kind, Kind::Peeked { .. })
    }
}

impl<B: Body> fmt::Debug for PeekedBody<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.kind {
            Kind::Inner { .. } => f.write_str("PeekedBody::Inner"),
            Kind::Peeked { frames, error, .. } => f
                .debug_struct("PeekedBody::Peeked")
                .field("frames", &frames.len())
                .field("failed", &error.is_some())
                .finish(),
        }
    }
}

impl<B: Body> Body for PeekedBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    #[inline]
    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<B::Data>, B::Error>>> {
        match self.project().kind.project() {
            KindProj::Inner { body } => body.poll_frame(cx),
            KindProj::Peeked {
                frames,
                error,
                body,
                ended,
            } => {
                if let Some(frame) = frames.pop_front() {
                    return Poll::Ready(Some(Ok(frame)));
                }
                if let Some(e) = error.take() {
                    return Poll::Ready(Some(Err(e)));
                }
                if *ended {
                    return Poll::Ready(None);
                }
                let next = ready!(body.as_mut().poll_frame(cx));
                if !matches!(next, Some(Ok(_))) {
                    *ended = true;
                }
                Poll::Ready(next)
            }
        }
    }

    #[inline]
    fn is_end_stream(&self) -> bool {
        match &self.kind {
            Kind::Inner { body } => body.is_end_stream(),
            Kind::Peeked {
                frames,
                error,
                body,
                ended,
            } => frames.is_empty() && error.is_none() && (*ended || body.is_end_stream()),
        }
    }

    #[inline]
    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            Kind::Inner { body } => body.size_hint(),
            Kind::Peeked {
                frames,
                error,
                body,
                ended,
            } => {
                let held: u64 = frames
                    .iter()
                    .filter_map(Frame::data_ref)
                    .map(|d| d.remaining() as u64)
                    .sum();
                let rest = if error.is_some() {
                    // The body fails after the frames held: how much it would have sent is
                    // not known.
                    SizeHint::new()
                } else if *ended {
                    SizeHint::with_exact(0)
                } else {
                    body.size_hint()
                };
                after_len(held, rest)
            }
        }
    }
}
