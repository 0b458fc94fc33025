//! The streaming mode of [`ReplayBody`](super::ReplayBody): copies of a request body that share
//! one recording of the caller's body.
//!
//! The copy an attempt reads takes the caller's body (the *source*) out of the shared
//! [`Record`] and polls it without any lock held; each frame it gets is recorded under the
//! lock (a `Bytes` reference count, a push) and passed on at once. Another copy replays the
//! recorded frames, then takes the source itself where the last reader left it (a copy gives the
//! source back when it is dropped). Once more than the limit has been read, the recording is
//! dropped and only the copy holding the source goes on; every other copy fails with
//! [`NotReplayable`]. A copy that waits for the source is woken when the holder gives it back,
//! ends or fails it, or passes the limit. None of the caller's code (the source's `poll_frame`,
//! `size_hint`, `is_end_stream`, its data's `Buf`, its error's conversion, its drop) runs under
//! the lock.

use std::mem;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll, Waker, ready};

use bytes::{Buf, Bytes};
use http::HeaderMap;
use http_body::{Body, Frame, SizeHint};
use palisade_core::BoxError;

use super::replay::{NotReplayable, after_len};

/// What the copies of one streaming body share.
pub(super) struct Record<B> {
    /// The data read so far, frame by frame, while [`kept`](Self::kept).
    chunks: Vec<Bytes>,
    /// Bytes read from the source so far.
    len: usize,
    /// The trailers read so far, while kept.
    trailers: Option<HeaderMap>,
    /// The most bytes recorded.
    limit: usize,
    /// Every frame read so far is recorded: false once more than `limit` bytes were read, or
    /// the source failed.
    kept: bool,
    /// The source failed (rather than outgrew the limit).
    failed: bool,
    /// The source ended: everything it had is recorded (while kept).
    ended: bool,
    /// The source while no copy reads it.
    source: Option<B>,
    /// The size hint of the unread source and whether it said it ended, as of its last frame.
    rest: SizeHint,
    rest_ended: bool,
    /// The size hint of the whole body, for a copy that cannot replay it (see `Kind::Taken`).
    whole: SizeHint,
    /// Copies that wait for the source while another copy holds it.
    waiting: Vec<Waker>,
}

impl<B> Record<B> {
    /// Drops the recording: no copy but the source's holder can send the body any more.
    fn forget(&mut self) {
        self.kept = false;
        self.chunks = Vec::new();
        self.trailers = None;
    }
}

fn lock<B>(shared: &Mutex<Record<B>>) -> MutexGuard<'_, Record<B>> {
    // Nothing panics while the lock is held; if a user's waker did, the record is still whole.
    shared.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The recorded trailers, if the copy whose flag is `sent` has not given them yet.
fn unsent_trailers<B>(sent: &mut bool, record: &Record<B>) -> Option<Frame<Bytes>> {
    // A record that was not kept has no trailers.
    if *sent {
        return None;
    }
    *sent = true;
    record.trailers.clone().map(Frame::trailers)
}

/// One copy of a streaming body.
pub(super) struct Replica<B> {
    shared: Arc<Mutex<Record<B>>>,
    /// The source, while this copy reads it.
    source: Option<B>,
    /// How many recorded chunks, and bytes, this copy has replayed.
    next: usize,
    sent: usize,
    /// This copy gave the trailers.
    trailers_sent: bool,
    /// This copy gave its end (or its error): it gives nothing more.
    finished: bool,
}

impl<B: Body> Replica<B> {
    /// The first copy of `source`, which records up to `limit` bytes.
    pub(super) fn new(source: B, limit: usize) -> Self {
        let rest = source.size_hint();
        let rest_ended = source.is_end_stream();
        Replica::of(Arc::new(Mutex::new(Record {
            chunks: Vec::new(),
            len: 0,
            trailers: None,
            limit,
            kept: true,
            failed: false,
            ended: false,
            source: Some(source),
            rest,
            rest_ended,
            whole: rest,
            waiting: Vec::new(),
        })))
    }
}

impl<B> Replica<B> {
    fn of(shared: Arc<Mutex<Record<B>>>) -> Self {
        Replica {
            shared,
            source: None,
            next: 0,
            sent: 0,
            trailers_sent: false,
            finished: false,
        }
    }

    /// Whether a copy made now could send the whole body.
    pub(super) fn is_kept(&self) -> bool {
        lock(&self.shared).kept
    }

    /// The bytes recorded so far (for `Debug`).
    pub(super) fn recorded(&self) -> (usize, bool) {
        let record = lock(&self.shared);
        (record.len, record.kept)
    }
}

impl<B> Clone for Replica<B> {
    /// A copy that starts from the beginning: it replays what was recorded, then reads on.
    fn clone(&self) -> Self {
        Replica::of(self.shared.clone())
    }
}

impl<B> Drop for Replica<B> {
    fn drop(&mut self) {
        let Some(source) = self.source.take() else {
            return;
        };
        let mut record = lock(&self.shared);
        let waiting = mem::take(&mut record.waiting);
        // Given back for the next copy, unless no copy can use it (then it is dropped below,
        // outside the lock, with its connection).
        let unused = if record.kept {
            record.source = Some(source);
            None
        } else {
            Some(source)
        };
        drop(record);
        drop(unused);
        waiting.into_iter().for_each(Waker::wake);
    }
}

impl<B> Replica<B>
where
    B: Body + Unpin,
    B::Error: Into<BoxError>,
{
    pub(super) fn poll_frame(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        loop {
            if self.finished {
                return Poll::Ready(None);
            }
            if let Some(source) = self.source.as_mut() {
                // No lock held while the caller's body is polled.
                let polled = ready!(std::pin::Pin::new(source).poll_frame(cx));
                return Poll::Ready(self.read(polled));
            }
            let mut record = lock(&self.shared);
            if !record.kept {
                let failed = record.failed;
                drop(record);
                self.finished = true;
                // So that `class_of` reads its class under any classifier; error path only.
                palisade_core::register::<NotReplayable>();
                return Poll::Ready(Some(Err(Box::new(NotReplayable::new(failed)))));
            }
            if let Some(chunk) = record.chunks.get(self.next).cloned() {
                self.next += 1;
                self.sent += chunk.len();
                return Poll::Ready(Some(Ok(Frame::data(chunk))));
            }
            if record.ended {
                self.finished = true;
                return Poll::Ready(unsent_trailers(&mut self.trailers_sent, &record).map(Ok));
            }
            match record.source.take() {
                // Everything recorded was given: read on where the last reader stopped.
                Some(source) => self.source = Some(source),
                None => {
                    // Another copy reads it (an attempt still being dropped): woken when it
                    // gives the source back.
                    if !record.waiting.iter().any(|w| w.will_wake(cx.waker())) {
                        record.waiting.push(cx.waker().clone());
                    }
                    return Poll::Pending;
                }
            }
        }
    }

    /// Records what the source gave and passes it on.
    fn read(
        &mut self,
        polled: Option<Result<Frame<B::Data>, B::Error>>,
    ) -> Option<Result<Frame<Bytes>, BoxError>> {
        // The caller's code first, outside the lock: the frame's bytes, the error's conversion,
        // the size and end of what is left. A source that ended or failed is dropped after the
        // lock is released: its drop is the caller's code too.
        let polled = polled.map(|r| {
            r.map(|frame| frame.map_data(|mut d| d.copy_to_bytes(d.remaining())))
                .map_err(Into::into)
        });
        let spent = match polled {
            Some(Ok(_)) => None,
            _ => self.source.take(),
        };
        let rest = self
            .source
            .as_ref()
            .map(|source| (source.size_hint(), source.is_end_stream()));
        let mut record = lock(&self.shared);
        let mut passed = None;
        let out = match polled {
            Some(Ok(frame)) => {
                // This copy keeps the source until its end, its error or its drop: it never
                // replays again, so its own position is not kept up to date.
                if let Some(data) = frame.data_ref() {
                    record.len = record.len.saturating_add(data.len());
                    if record.kept && record.len > record.limit {
                        record.forget();
                        passed = Some(record.limit);
                    } else if record.kept {
                        record.chunks.push(data.clone());
                    }
                } else if let Some(trailers) = frame.trailers_ref() {
                    self.trailers_sent = true;
                    if record.kept {
                        match &mut record.trailers {
                            Some(all) => all.extend(trailers.clone()),
                            None => record.trailers = Some(trailers.clone()),
                        }
                    }
                }
                if let Some((hint, ended)) = rest {
                    record.rest = hint;
                    record.rest_ended = ended;
                }
                Some(Ok(frame))
            }
            Some(Err(e)) => {
                record.forget();
                record.failed = true;
                self.finished = true;
                Some(Err(e))
            }
            None => {
                record.ended = true;
                record.rest = SizeHint::with_exact(0);
                record.rest_ended = true;
                self.finished = true;
                // Trailers another copy read before this one took over.
                unsent_trailers(&mut self.trailers_sent, &record).map(Ok)
            }
        };
        // Copies waiting for the source: it ended or failed (no drop of this copy will give it
        // back), or the body passed the limit (they fail now rather than when this copy is
        // dropped).
        let waiting = if self.finished || passed.is_some() {
            mem::take(&mut record.waiting)
        } else {
            Vec::new()
        };
        drop(record);
        drop(spent);
        waiting.into_iter().for_each(Waker::wake);
        if let Some(limit) = passed {
            tracing::debug!(
                target: "palisade_http::body",
                limit,
                "request body passed the replay limit while streaming: it cannot be sent again"
            );
        }
        out
    }

    pub(super) fn is_end_stream(&self) -> bool {
        if self.finished {
            return true;
        }
        if let Some(source) = &self.source {
            // Trailers recorded by an earlier reader come when the source gives its end, which
            // the holder polls for right after taking it: a source that says it ended has.
            return source.is_end_stream();
        }
        let record = lock(&self.shared);
        // A copy that cannot replay still has its error to give.
        record.kept
            && self.next == record.chunks.len()
            && (record.ended || record.rest_ended)
            && (record.trailers.is_none() || self.trailers_sent)
    }

    pub(super) fn size_hint(&self) -> SizeHint {
        if self.finished {
            return SizeHint::with_exact(0);
        }
        if let Some(source) = &self.source {
            // The holder has given everything recorded.
            return source.size_hint();
        }
        let record = lock(&self.shared);
        if !record.kept {
            // Until its error is given: see `Kind::Taken`.
            return record.whole;
        }
        let recorded = record.len.saturating_sub(self.sent) as u64;
        if record.ended {
            SizeHint::with_exact(recorded)
        } else {
            after_len(recorded, record.rest)
        }
    }
}
