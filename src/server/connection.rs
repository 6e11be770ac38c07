//! One connection's life: its requests counted while they are in progress, the connection
//! closed when it has had none for too long, and closed when the server stops: gracefully
//! first, then for real.
//!
//! hyper times only HTTP/1 header reads; an HTTP/2 connection that sends its preface and then
//! nothing would otherwise hold its slot forever. The watch here covers both protocols.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use axum::http::{Request, Response};
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper_util::server::graceful::GracefulConnection;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::config::HttpConfig;

/// How long a connection asked to close may stay open with no request in progress (an HTTP/2
/// client that never answers the GOAWAY's PING would otherwise keep it).
const CLOSE_LINGER: Duration = Duration::from_secs(1);

/// When a connection with no request in progress is closed.
#[derive(Debug, Clone, Copy)]
pub(super) struct Limits {
    /// Until its first request starts: HTTP/1's header read timeout, applied to HTTP/2 too
    /// (slow loris: a preface and then nothing, or a header block never finished).
    first_request: Duration,
    /// After a request.
    idle: Duration,
}

impl Limits {
    pub(super) fn new(http: &HttpConfig) -> Self {
        let idle = Duration::from_millis(http.idle_timeout_ms);
        Self {
            first_request: Duration::from_millis(http.header_read_timeout_ms).min(idle),
            idle,
        }
    }
}

/// What a connection's requests are doing, shared by its service and its watch.
#[derive(Debug)]
pub(super) struct Activity {
    opened: Instant,
    /// Requests in progress: from the service call until the response body is done with.
    active: AtomicUsize,
    started: AtomicBool,
    /// When the last request ended, in milliseconds since `opened`.
    last_end_ms: AtomicU64,
}

impl Activity {
    pub(super) fn new() -> Arc<Self> {
        Arc::new(Self {
            opened: Instant::now(),
            active: AtomicUsize::new(0),
            started: AtomicBool::new(false),
            last_end_ms: AtomicU64::new(0),
        })
    }

    fn begin(self: &Arc<Self>) -> Busy {
        self.started.store(true, Ordering::SeqCst);
        self.active.fetch_add(1, Ordering::SeqCst);
        Busy(Arc::clone(self))
    }

    /// When the connection has been idle too long, or `None` while a request is in progress.
    fn idle_until(&self, limits: &Limits) -> Option<Instant> {
        if self.active.load(Ordering::SeqCst) > 0 {
            return None;
        }
        if !self.started.load(Ordering::SeqCst) {
            return Some(self.opened + limits.first_request);
        }
        let last_end = Duration::from_millis(self.last_end_ms.load(Ordering::SeqCst));
        Some(self.opened + last_end + limits.idle)
    }
}

/// A request in progress; it ends when dropped.
#[derive(Debug)]
struct Busy(Arc<Activity>);

impl Drop for Busy {
    fn drop(&mut self) {
        let activity = &self.0;
        let since_open = activity.opened.elapsed().as_millis() as u64;
        // Stored before the count drops, so that a watch that sees no request in progress also
        // sees when the last one ended.
        activity.last_end_ms.fetch_max(since_open, Ordering::SeqCst);
        activity.active.fetch_sub(1, Ordering::SeqCst);
    }
}

/// A hyper service that counts its requests in [`Activity`].
#[derive(Debug, Clone)]
pub(super) struct Tracked<S> {
    inner: S,
    activity: Arc<Activity>,
}

impl<S> Tracked<S> {
    pub(super) fn new(inner: S, activity: Arc<Activity>) -> Self {
        Self { inner, activity }
    }
}

impl<S, B> hyper::service::Service<Request<Incoming>> for Tracked<S>
where
    S: hyper::service::Service<Request<Incoming>, Response = Response<B>>,
{
    type Response = Response<TrackedBody<B>>;
    type Error = S::Error;
    type Future = TrackedFuture<S::Future>;

    fn call(&self, request: Request<Incoming>) -> Self::Future {
        let busy = self.activity.begin();
        TrackedFuture {
            inner: self.inner.call(request),
            busy: Some(busy),
        }
    }
}

pin_project_lite::pin_project! {
    /// A request in progress until its response is ready; the response body then carries on.
    pub(super) struct TrackedFuture<F> {
        #[pin]
        inner: F,
        busy: Option<Busy>,
    }
}

impl<F, B, E> Future for TrackedFuture<F>
where
    F: Future<Output = Result<Response<B>, E>>,
{
    type Output = Result<Response<TrackedBody<B>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let response = ready!(this.inner.poll(cx))?;
        let busy = this.busy.take().expect("polled after it completed");
        Poll::Ready(Ok(response.map(|inner| TrackedBody { inner, _busy: busy })))
    }
}

pin_project_lite::pin_project! {
    /// A response body; its request ends when hyper is done with it.
    pub(super) struct TrackedBody<B> {
        #[pin]
        inner: B,
        _busy: Busy,
    }
}

impl<B: Body> Body for TrackedBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        self.project().inner.poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// Serves `connection` to its end. It is asked to close (HTTP/2: GOAWAY) when it has had no
/// request in progress for its limit, or when `stop` fires; once asked, it is dropped if it
/// is still open with no request in progress [`CLOSE_LINGER`] later. `kill` drops it whatever
/// it is doing.
pub(super) async fn drive<C: GracefulConnection>(
    connection: C,
    activity: Arc<Activity>,
    limits: Limits,
    stop: CancellationToken,
    kill: CancellationToken,
) -> Result<(), C::Error> {
    tokio::pin!(connection);
    let mut closing_since: Option<Instant> = None;
    let check = tokio::time::sleep_until(activity.opened + limits.first_request);
    tokio::pin!(check);
    loop {
        tokio::select! {
            result = connection.as_mut() => return result,
            () = kill.cancelled() => {
                tracing::debug!("connection closed at the end of the shutdown grace period");
                return Ok(());
            }
            () = stop.cancelled(), if closing_since.is_none() => {
                let now = Instant::now();
                closing_since = Some(now);
                connection.as_mut().graceful_shutdown();
                check.as_mut().reset(now + CLOSE_LINGER);
            }
            () = &mut check => {
                let now = Instant::now();
                let idle_until = activity.idle_until(&limits).map(|at| match closing_since {
                    Some(since) => at.min(since + CLOSE_LINGER),
                    None => at,
                });
                match (idle_until, closing_since) {
                    // A request is in progress: look again later. Ending it cannot make the
                    // connection's limit come sooner than that.
                    (None, None) => check.as_mut().reset(now + limits.idle),
                    (None, Some(_)) => check.as_mut().reset(now + CLOSE_LINGER),
                    (Some(at), _) if at > now => check.as_mut().reset(at),
                    (Some(_), None) => {
                        tracing::debug!("closing a connection with no request in progress");
                        closing_since = Some(now);
                        connection.as_mut().graceful_shutdown();
                        check.as_mut().reset(now + CLOSE_LINGER);
                    }
                    (Some(_), Some(_)) => {
                        tracing::debug!("dropping a connection that did not close when asked");
                        return Ok(());
                    }
                }
            }
        }
    }
}
