//! Replayable request bodies: [`ReplayLayer`], [`Replay`], [`ReplayBody`], [`ReplayAttempts`].

use std::collections::VecDeque;
use std::error::Error;
use std::fmt;
use std::future::Future;
use std::mem;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::{Buf, BufMut, Bytes, BytesMut};
use http::{HeaderMap, Request};
use http_body::{Body, Frame, SizeHint};
use palisade_core::{BoxError, Category, Class, HasClass};
use palisade_retry::MaxAttempts;
use pin_project_lite::pin_project;
use tower_layer::Layer;
use tower_service::Service;

use super::record::Replica;

/// The body of a request that could not be kept for replay was asked for a second time.
///
/// Its class is `Validation`, not retryable: the request cannot be sent again. With
/// [`ReplayAttempts`] on the retry layer, no attempt is made with a body known not to be kept
/// when the attempt before failed, and this does not happen; it can when a client below goes
/// on reading a [streaming](ReplayLayer::streaming) body after its attempt failed (an HTTP/1
/// connection sending the rest of a body the server has already answered) and passes the
/// limit only then.
///
/// Over HTTP/1, hyper's client returns this error as the source of its own
/// (`hyper::Error` of kind user body), so the classifier reads it. Over HTTP/2, hyper resets
/// the stream instead (`INTERNAL_ERROR`), which reads as a retryable server error: one more
/// reason to build the retry layer with [`ReplayAttempts`], which sends no such attempt.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NotReplayable(Why);

/// Why a body was not kept.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
enum Why {
    /// It was larger than the limit.
    #[default]
    TooLarge,
    /// The caller's body failed while streaming.
    Failed,
}

impl NotReplayable {
    pub(super) fn new(failed: bool) -> Self {
        NotReplayable(if failed { Why::Failed } else { Why::TooLarge })
    }
}

impl fmt::Display for NotReplayable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self.0 {
            Why::TooLarge => "request body larger than the replay limit cannot be sent again",
            Why::Failed => "request body that failed while streaming cannot be sent again",
        })
    }
}

impl Error for NotReplayable {}

impl HasClass for NotReplayable {
    fn class(&self) -> Class {
        Class::new(Category::Validation).with_retryable(false)
    }
}

/// A request body that a retry can send again: kept whole in memory (cloning it is a
/// reference-count increment and replays it from the start), recorded while it streams, or
/// streamed once.
///
/// Made by [`Replay`]. A clone of a body that was not kept ([`is_replayable`] is `false`) fails
/// with [`NotReplayable`] when read, and has the size hint of the body it stands for, so that
/// a client reads it (hyper's HTTP/1 client would send a body it believes empty without
/// reading it, and the server would get the request with no body): pair the retry layer with
/// [`ReplayAttempts`] so that such a request is not sent again.
///
/// # Streaming
///
/// A body made by [`ReplayBody::streaming`] passes each frame of the caller's body on as soon
/// as it arrives, and records it (data and trailers) in a buffer its clones share, up to the
/// limit. A clone replays the recorded frames, then reads on from the caller's body where the
/// copy before it stopped: that copy gives the caller's body back when it is dropped (a retry
/// drops an attempt before it sends the next; a clone polled while another copy still reads
/// waits for it, and is woken when that copy gives the body back, ends it or passes the
/// limit). Once more than the limit has been read, the recording is dropped and the body can
/// no longer be replayed: the copy reading goes on to the end, the others fail with
/// [`NotReplayable`], and [`is_replayable`] is `false` on every copy, which [`ReplayAttempts`]
/// reads when an attempt fails. The clones share one lock, held only to record or replay a
/// frame, never while the caller's body is polled.
///
/// [`is_replayable`]: ReplayBody::is_replayable
pub struct ReplayBody<B> {
    kind: Kind<B>,
}

enum Kind<B> {
    Full {
        data: Bytes,
        trailers: Option<HeaderMap>,
        // 0: the data is next, 1: the trailers, 2: done.
        next: u8,
    },
    Once {
        prefix: VecDeque<Bytes>,
        rest: Option<B>,
        // The size hint of the whole body, for the clones that stand for it.
        whole: SizeHint,
    },
    Streaming(Replica<B>),
    Taken {
        reported: bool,
        // The size hint of the whole body it stands for, until its error is reported: an
        // HTTP/1 client told "exactly 0 bytes" sends `content-length: 0` without reading the
        // body, and the server would get the request with an empty body instead of none.
        hint: SizeHint,
    },
}

impl<B> ReplayBody<B> {
    /// A body kept whole: `data`, then `trailers` if any.
    pub fn full(data: Bytes, trailers: Option<HeaderMap>) -> Self {
        ReplayBody {
            kind: Kind::Full {
                data,
                trailers,
                next: 0,
            },
        }
    }

    /// An empty body (replayable).
    pub fn empty() -> Self {
        Self::full(Bytes::new(), None)
    }

    /// A body that streams `rest` after `prefix`, once: not replayable.
    pub fn once(prefix: impl IntoIterator<Item = Bytes>, rest: B) -> Self
    where
        B: Body,
    {
        let prefix: VecDeque<Bytes> = prefix.into_iter().collect();
        let whole = after(&prefix, rest.size_hint());
        ReplayBody {
            kind: Kind::Once {
                prefix,
                rest: Some(rest),
                whole,
            },
        }
    }

    /// A body that streams `body`, recording up to `limit` bytes of it for its clones to
    /// replay (see [Streaming](#streaming)).
    pub fn streaming(body: B, limit: usize) -> Self
    where
        B: Body,
    {
        ReplayBody {
            kind: Kind::Streaming(Replica::new(body, limit)),
        }
    }

    /// Whether a clone replays this body: it was kept whole, or it streams and everything read
    /// of it so far was recorded (a streaming body is replayable until more than the limit has
    /// been read, or the caller's body fails).
    pub fn is_replayable(&self) -> bool {
        match &self.kind {
            Kind::Full { .. } => true,
            Kind::Streaming(replica) => replica.is_kept(),
            Kind::Once { .. } | Kind::Taken { .. } => false,
        }
    }

    /// The kept bytes, when the body was kept whole.
    pub fn bytes(&self) -> Option<&Bytes> {
        match &self.kind {
            Kind::Full { data, .. } => Some(data),
            _ => None,
        }
    }

    /// The pieces a body sent once holds before the rest of the caller's body, and their bytes.
    #[cfg(test)]
    pub(super) fn prefix(&self) -> Option<(usize, usize)> {
        match &self.kind {
            Kind::Once { prefix, .. } => Some((prefix.len(), prefix.iter().map(Bytes::len).sum())),
            _ => None,
        }
    }
}

/// The size hint of `prefix` followed by a body of size hint `rest`.
fn after(prefix: &VecDeque<Bytes>, rest: SizeHint) -> SizeHint {
    after_len(prefix.iter().map(|b| b.len() as u64).sum(), rest)
}

/// The size hint of `kept` bytes followed by a body of size hint `rest`.
pub(super) fn after_len(kept: u64, rest: SizeHint) -> SizeHint {
    let mut hint = SizeHint::new();
    hint.set_lower(kept.saturating_add(rest.lower()));
    if let Some(upper) = rest.upper() {
        hint.set_upper(kept.saturating_add(upper));
    }
    hint
}

impl<B> Clone for ReplayBody<B> {
    fn clone(&self) -> Self {
        let hint = match &self.kind {
            Kind::Full { data, trailers, .. } => {
                return Self::full(data.clone(), trailers.clone());
            }
            Kind::Streaming(replica) => {
                return ReplayBody {
                    kind: Kind::Streaming(replica.clone()),
                };
            }
            Kind::Once { whole, .. } | Kind::Taken { hint: whole, .. } => *whole,
        };
        ReplayBody {
            kind: Kind::Taken {
                reported: false,
                hint,
            },
        }
    }
}

impl<B> fmt::Debug for ReplayBody<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.kind {
            Kind::Full { data, trailers, .. } => f
                .debug_struct("ReplayBody::Full")
                .field("len", &data.len())
                .field("trailers", &trailers.is_some())
                .finish(),
            Kind::Once { prefix, .. } => f
                .debug_struct("ReplayBody::Once")
                .field("prefix", &prefix.iter().map(Bytes::len).sum::<usize>())
                .finish(),
            Kind::Streaming(replica) => {
                let (recorded, kept) = replica.recorded();
                f.debug_struct("ReplayBody::Streaming")
                    .field("read", &recorded)
                    .field("kept", &kept)
                    .finish()
            }
            Kind::Taken { .. } => f.write_str("ReplayBody::Taken"),
        }
    }
}

impl<B> Body for ReplayBody<B>
where
    B: Body + Unpin,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match &mut self.get_mut().kind {
            Kind::Full {
                data,
                trailers,
                next,
            } => {
                if *next == 0 {
                    *next = 1;
                    if !data.is_empty() {
                        return Poll::Ready(Some(Ok(Frame::data(data.clone()))));
                    }
                }
                if *next == 1 {
                    *next = 2;
                    if let Some(t) = trailers {
                        return Poll::Ready(Some(Ok(Frame::trailers(t.clone()))));
                    }
                }
                Poll::Ready(None)
            }
            Kind::Once { prefix, rest, .. } => {
                if let Some(chunk) = prefix.pop_front() {
                    return Poll::Ready(Some(Ok(Frame::data(chunk))));
                }
                let Some(body) = rest else {
                    return Poll::Ready(None);
                };
                match ready!(Pin::new(body).poll_frame(cx)) {
                    Some(Ok(frame)) => Poll::Ready(Some(Ok(
                        frame.map_data(|mut d| d.copy_to_bytes(d.remaining()))
                    ))),
                    Some(Err(e)) => {
                        *rest = None;
                        Poll::Ready(Some(Err(e.into())))
                    }
                    None => {
                        *rest = None;
                        Poll::Ready(None)
                    }
                }
            }
            Kind::Streaming(replica) => replica.poll_frame(cx),
            Kind::Taken { reported, .. } => {
                if mem::replace(reported, true) {
                    Poll::Ready(None)
                } else {
                    // So that `class_of` reads its class under any classifier (the default
                    // rules do not know this crate's types); on this error path only.
                    palisade_core::register::<NotReplayable>();
                    Poll::Ready(Some(Err(Box::new(NotReplayable::default()))))
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            Kind::Full {
                data,
                trailers,
                next,
            } => match next {
                0 => data.is_empty() && trailers.is_none(),
                1 => trailers.is_none(),
                _ => true,
            },
            Kind::Once { prefix, rest, .. } => {
                prefix.is_empty() && rest.as_ref().is_none_or(|b| b.is_end_stream())
            }
            Kind::Streaming(replica) => replica.is_end_stream(),
            Kind::Taken { reported, .. } => *reported,
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            Kind::Full { data, next, .. } => {
                SizeHint::with_exact(if *next == 0 { data.len() as u64 } else { 0 })
            }
            Kind::Once { prefix, rest, .. } => after(
                prefix,
                rest.as_ref()
                    .map_or(SizeHint::with_exact(0), Body::size_hint),
            ),
            Kind::Streaming(replica) => replica.size_hint(),
            Kind::Taken { reported: true, .. } => SizeHint::with_exact(0),
            Kind::Taken { hint, .. } => *hint,
        }
    }
}

/// Makes requests replayable for a retry layer above: see [`Replay`].
///
/// [`new`](ReplayLayer::new) reads each body (up to the limit) before the first attempt;
/// [`streaming`](ReplayLayer::streaming) sends it as it comes and records it on the way. Both
/// keep the same bytes in memory and take the same stack: the layer above the retry layer,
/// and the retry layer built with [`ReplayAttempts`]
/// (`.max_attempts_with(ReplayAttempts::new(..))`). The retry layer reads a request's limit
/// before its first attempt and again after each failed one, from the copy it keeps for the
/// next, so a body streamed past the limit during an attempt ends the request with that
/// attempt's own error, as a request whose attempts are spent. They differ in when the first
/// attempt starts and in when a body too large to replay is found out:
///
/// | | `ReplayLayer::new` (buffered) | `ReplayLayer::streaming` |
/// |---|---|---|
/// | first attempt starts | once the whole body has arrived | at once; each frame goes on as it arrives |
/// | a client-streaming or bidirectional gRPC call | never sent (its body ends after the answer) | works |
/// | a body found too large | before the first attempt, which is its only one | while an attempt streams it: that attempt is its last |
/// | a caller's body that fails | fails the call before anything is sent | fails the attempt reading it, after the server got part of the body |
/// | state per request | none shared; the kept body is one `Bytes` | one `Arc<Mutex<..>>` shared by the copies, locked once per frame |
///
/// Use `streaming` for gRPC client-streaming and bidirectional calls, for uploads, and
/// wherever the first attempt should not wait for the whole body. `new` stays the default:
/// a server never sees a request whose body the caller did not finish, and for requests whose
/// body is one message (HTTP APIs, tonic's unary and server-streaming calls) waiting for it
/// costs nothing, since the server answers only once it has read it all; and a stack built
/// with `new` keeps behaving as it did.
#[derive(Clone, Copy, Debug)]
pub struct ReplayLayer {
    limit: usize,
    streaming: bool,
}

impl ReplayLayer {
    /// Keeps request bodies of up to `limit` bytes for replay, reading each one before the
    /// first attempt.
    pub fn new(limit: usize) -> Self {
        ReplayLayer {
            limit,
            streaming: false,
        }
    }

    /// Sends request bodies as they stream, recording up to `limit` bytes of each for replay.
    pub fn streaming(limit: usize) -> Self {
        ReplayLayer {
            limit,
            streaming: true,
        }
    }

    /// The largest body kept, in bytes.
    pub fn limit(&self) -> usize {
        self.limit
    }

    /// Whether bodies are sent as they stream ([`ReplayLayer::streaming`]).
    pub fn is_streaming(&self) -> bool {
        self.streaming
    }
}

impl<S> Layer<S> for ReplayLayer {
    type Service = Replay<S>;

    fn layer(&self, inner: S) -> Replay<S> {
        Replay {
            inner,
            limit: self.limit,
            streaming: self.streaming,
        }
    }
}

/// Makes each request's body replayable, up to a limit, so that the request can be cloned and
/// sent again: `Request<B>` in, `Request<ReplayBody<B>>` to the inner service (a retry layer,
/// which needs `Clone` requests; `Request<hyper::body::Incoming>` and axum's request are not).
///
/// An empty body costs nothing. A body larger than the limit by its size hint is sent as it
/// streams, once: a `DEBUG` event (target `palisade_http::body`) says the request goes without
/// retry, and [`ReplayBody::is_replayable`] is `false`, which [`ReplayAttempts`] turns into a
/// limit of one attempt. Any other body is
///
/// - **buffered** ([`Replay::new`], [`ReplayLayer::new`]): read whole before the inner service
///   is called, and every clone replays it; one whose data passes `limit` bytes is sent as
///   above: what was read first, then the rest. Trailers, the body's last frame, are kept
///   whatever their size (the HTTP implementation bounds them as it bounds headers); the
///   limit counts data only, in both modes.
/// - **streaming** ([`Replay::streaming`], [`ReplayLayer::streaming`]): passed to the inner
///   service at once, each frame sent as it arrives and recorded for the clones (see
///   [`ReplayBody`]'s [Streaming](ReplayBody#streaming)); one that passes `limit` bytes goes
///   on streaming, and [`ReplayAttempts`], read again when the attempt fails, ends that
///   request with the attempt's own error.
///
/// A buffered body must end before anything is sent: do not put a buffered `Replay` in front of
/// a client-streaming or bidirectional gRPC call (or any request whose body waits for the
/// response before it ends), which would never be sent. Use the streaming mode for those.
///
/// # Errors
///
/// A buffered body that fails while being read fails the call with its error, before the
/// inner service is called; a streaming one fails the attempt that reads it, and cannot be
/// sent again.
///
/// # Readiness
///
/// `poll_ready` is the inner service's. A call that must read its body first takes the ready
/// inner service into its future and leaves a clone in its place.
#[derive(Clone, Debug)]
pub struct Replay<S> {
    inner: S,
    limit: usize,
    streaming: bool,
}

impl<S> Replay<S> {
    /// Wraps `inner`, keeping bodies of up to `limit` bytes, each read before the first attempt.
    pub fn new(inner: S, limit: usize) -> Self {
        Replay {
            inner,
            limit,
            streaming: false,
        }
    }

    /// Wraps `inner`, sending bodies as they stream and recording up to `limit` bytes of each.
    pub fn streaming(inner: S, limit: usize) -> Self {
        Replay {
            inner,
            limit,
            streaming: true,
        }
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

fn sent_once(limit: usize) {
    tracing::debug!(
        target: "palisade_http::body",
        limit,
        "request body larger than the replay limit: sent once, without retry"
    );
}

impl<S, B> Service<Request<B>> for Replay<S>
where
    S: Service<Request<ReplayBody<B>>> + Clone,
    S::Error: Into<BoxError>,
    B: Body + Unpin,
    B::Error: Into<BoxError>,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = ReplayFuture<S::Future, S, B>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let (parts, body) = req.into_parts();
        if body.is_end_stream() {
            let req = Request::from_parts(parts, ReplayBody::empty());
            return ReplayFuture::calling(self.inner.call(req));
        }
        if body.size_hint().lower() > self.limit as u64 {
            sent_once(self.limit);
            let req = Request::from_parts(parts, ReplayBody::once([], body));
            return ReplayFuture::calling(self.inner.call(req));
        }
        if self.streaming {
            let req = Request::from_parts(parts, ReplayBody::streaming(body, self.limit));
            return ReplayFuture::calling(self.inner.call(req));
        }
        let clone = self.inner.clone();
        let service = mem::replace(&mut self.inner, clone);
        ReplayFuture {
            state: State::Reading {
                read: Some(Reading {
                    parts,
                    body,
                    kept: Kept::default(),
                    trailers: None,
                    service,
                }),
            },
            limit: self.limit,
        }
    }
}

struct Reading<S, B> {
    parts: http::request::Parts,
    body: B,
    kept: Kept,
    trailers: Option<HeaderMap>,
    service: S,
}

/// Frames of at least this many bytes are kept as they came (held, not copied); smaller ones
/// are copied together (see [`Kept`]).
const SMALL_FRAME: usize = 1024;

/// The data of a body being read whole: the first frame and every frame of at least
/// [`SMALL_FRAME`] bytes held as they came, each run of smaller ones between them copied into
/// one piece. A body sent a byte or a few at a time (a chunked upload in tiny chunks) is then
/// kept in a few pieces, not as one `Bytes` per frame (each a 32-byte handle, and perhaps a
/// hold on the read buffer it points into): at most two pieces per large frame, plus two.
/// Each byte of a small frame is copied once more than before, when the pieces are joined.
#[derive(Default)]
struct Kept {
    chunks: Vec<Bytes>,
    /// Small frames since the last piece, copied together.
    small: BytesMut,
    /// Bytes read so far.
    len: usize,
}

impl Kept {
    fn push(&mut self, mut data: impl Buf) {
        let n = data.remaining();
        self.len += n;
        if n >= SMALL_FRAME || (self.chunks.is_empty() && self.small.is_empty()) {
            self.flush();
            self.chunks.push(data.copy_to_bytes(n));
        } else {
            self.small.put(data);
        }
    }

    fn flush(&mut self) {
        if !self.small.is_empty() {
            self.chunks.push(self.small.split().freeze());
        }
    }

    /// The pieces, in order, and the bytes they hold.
    fn into_parts(mut self) -> (Vec<Bytes>, usize) {
        self.flush();
        (self.chunks, self.len)
    }
}

pin_project! {
    /// The response future of [`Replay`].
    ///
    /// `F` is the inner service's future, a parameter of its own rather than `S::Future`, so
    /// that the compiler can tell this future is `Send` inside an `async` block
    /// (rust-lang/rust#64552).
    pub struct ReplayFuture<F, S, B> {
        #[pin]
        state: State<F, S, B>,
        limit: usize,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<F, S, B> {
        Reading { read: Option<Reading<S, B>> },
        Calling { #[pin] future: F },
    }
}

impl<F, S, B> ReplayFuture<F, S, B> {
    fn calling(future: F) -> Self {
        ReplayFuture {
            state: State::Calling { future },
            limit: 0,
        }
    }
}

impl<F, S, B> fmt::Debug for ReplayFuture<F, S, B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match &self.state {
            State::Reading { .. } => "Reading",
            State::Calling { .. } => "Calling",
        };
        f.debug_struct("ReplayFuture")
            .field("state", &state)
            .field("limit", &self.limit)
            .finish()
    }
}

fn concat(chunks: Vec<Bytes>, len: usize) -> Bytes {
    match chunks.len() {
        0 => Bytes::new(),
        1 => chunks.into_iter().next().unwrap_or_default(),
        _ => {
            let mut all = BytesMut::with_capacity(len);
            for c in chunks {
                all.extend_from_slice(&c);
            }
            all.freeze()
        }
    }
}

impl<S, B> Future for ReplayFuture<S::Future, S, B>
where
    S: Service<Request<ReplayBody<B>>>,
    S::Error: Into<BoxError>,
    B: Body + Unpin,
    B::Error: Into<BoxError>,
{
    type Output = Result<S::Response, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        loop {
            match this.state.as_mut().project() {
                StateProj::Calling { future } => {
                    return future.poll(cx).map_err(Into::into);
                }
                StateProj::Reading { read } => {
                    let Some(r) = read.as_mut() else {
                        return Poll::Ready(Err("replay future polled after completion".into()));
                    };
                    // Read until the end, or past the limit.
                    let done = loop {
                        match ready!(Pin::new(&mut r.body).poll_frame(cx)) {
                            Some(Ok(frame)) => match frame.into_data() {
                                Ok(data) => {
                                    r.kept.push(data);
                                    if r.kept.len > *this.limit {
                                        break false;
                                    }
                                }
                                Err(frame) => {
                                    if let Ok(t) = frame.into_trailers() {
                                        match &mut r.trailers {
                                            Some(all) => all.extend(t),
                                            None => r.trailers = Some(t),
                                        }
                                    }
                                }
                            },
                            Some(Err(e)) => {
                                *read = None;
                                return Poll::Ready(Err(e.into()));
                            }
                            None => break true,
                        }
                    };
                    let Some(Reading {
                        parts,
                        body,
                        kept,
                        trailers,
                        mut service,
                    }) = read.take()
                    else {
                        return Poll::Ready(Err("replay future polled after completion".into()));
                    };
                    let (chunks, len) = kept.into_parts();
                    let body = if done {
                        ReplayBody::full(concat(chunks, len), trailers)
                    } else {
                        sent_once(*this.limit);
                        ReplayBody::once(chunks, body)
                    };
                    let future = service.call(Request::from_parts(parts, body));
                    this.state.set(State::Calling { future });
                }
            }
        }
    }
}

/// The retry attempt limit for [`ReplayBody`] requests: one attempt for a body that was not
/// kept for replay, `A`'s limit for the others.
///
/// The retry layer reads a request's limit before its first attempt, and again after each
/// failed attempt, from the copy it keeps for the next one (a later read can only lower it).
/// A buffered body ([`ReplayLayer::new`]) is whole before the first read, so a body too large
/// to keep gets one attempt and the retry keeps no copy of it. A
/// [streaming](ReplayLayer::streaming) body has not been read yet: it gets `A`'s limit (or one
/// attempt if its size hint already says it is too large), and once an attempt has streamed it
/// past the limit, the read after that attempt fails gives one attempt, so the request ends
/// with that attempt's own error, as a request whose attempts are spent.
///
/// Give it to the retry layer with `RetryBuilder::max_attempts_with`:
///
/// ```
/// use palisade_http::body::ReplayAttempts;
/// use palisade_retry::{LayerLimit, RetryLayer};
///
/// let retry = RetryLayer::builder()
///     .max_attempts(3)
///     .max_attempts_with(ReplayAttempts::new(LayerLimit))
///     .build()
///     .unwrap();
/// # let _ = retry;
/// ```
#[derive(Clone, Copy, Debug, Default)]
pub struct ReplayAttempts<A> {
    inner: A,
}

impl<A> ReplayAttempts<A> {
    /// One attempt for bodies not kept, `inner`'s limit otherwise.
    pub fn new(inner: A) -> Self {
        ReplayAttempts { inner }
    }
}

impl<A, B> MaxAttempts<Request<ReplayBody<B>>> for ReplayAttempts<A>
where
    A: MaxAttempts<Request<ReplayBody<B>>>,
{
    /// `inner`'s limit for a body kept for replay; `Some(0)` for one that is not (only the
    /// request itself can be sent: a copy's body is gone), which the retry layer reads as one
    /// attempt and no copy, so that not even an attempt an open breaker refused is sent
    /// again, with a body that would fail as [`NotReplayable`].
    fn max_attempts(&self, req: &Request<ReplayBody<B>>) -> Option<u32> {
        if req.body().is_replayable() {
            self.inner.max_attempts(req)
        } else {
            Some(0)
        }
    }
}
