//! The dashboard's HTTP server: an accept loop over hyper's HTTP/1 connections, with every
//! connection's time and the number of connections bounded, so that nobody can hold the
//! dashboard open.
//!
//! # Theory of operation
//! - A connection has [`Limits::header_timeout`] to send each request's head, counted from
//!   when the server starts waiting for it: the first request's, and the next one's on a
//!   kept-alive connection. So a half-sent request, or an idle kept-alive connection, is
//!   closed after it (hyper's `header_read_timeout`).
//! - A handler has [`Limits::request_timeout`] to answer (then 503), and a connection on
//!   which no byte moves either way for [`Limits::idle_timeout`] is closed (a client that
//!   stopped reading its response).
//! - At most [`Limits::max_connections`] are open at once. When a new one arrives with all
//!   taken, the oldest connection with no request in progress (a half-open one, or an idle
//!   kept-alive one) is closed to make room: a flood of slow connections costs the flooder
//!   its oldest ones, never a normal user their page. When every connection is busy with a
//!   request (each bounded by the request timeout), the new one waits up to
//!   [`WAIT_FOR_ROOM`], then is closed. Running out of file descriptors sheds the same way.
//! - On shutdown the loop stops accepting, asks each connection to finish the request it
//!   serves, and waits up to [`DRAIN`] for them.

use std::collections::BTreeMap;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::extract::ConnectInfo;
use axum::http::{Request, StatusCode, header};
use axum::response::{IntoResponse, Response};
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, Semaphore, watch};
use tokio::time::Instant;
use tower::ServiceExt;

/// How long a new connection waits for room when every open one is serving a request.
pub const WAIT_FOR_ROOM: Duration = Duration::from_secs(1);

/// How long shutdown waits for the requests in progress.
pub const DRAIN: Duration = Duration::from_secs(2);

/// The bounds of the server's connections.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Time to send a request's head (also the longest a kept-alive connection stays idle).
    pub header_timeout: Duration,
    /// Time a handler has to answer.
    pub request_timeout: Duration,
    /// Time a connection may go without a byte read or written.
    pub idle_timeout: Duration,
    /// Connections open at once.
    pub max_connections: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            header_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(60),
            max_connections: 256,
        }
    }
}

/// Serves `app` on `listener` within `limits` until `shutdown` resolves.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    limits: Limits,
    shutdown: impl Future<Output = ()>,
) -> io::Result<()> {
    let max = limits.max_connections.clamp(1, Semaphore::MAX_PERMITS);
    let room = Arc::new(Semaphore::new(max));
    let open = Arc::new(Open::default());
    let (stop, stopping) = watch::channel(false);
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(err) => {
                    // Out of descriptors (EMFILE, ENFILE) or a connection reset before it was
                    // accepted: shed an idle connection, breathe, go on.
                    tracing::warn!(error = %err, "failed to accept a dashboard connection");
                    open.close_oldest_idle();
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let permit = match Arc::clone(&room).try_acquire_owned() {
            Ok(permit) => permit,
            Err(_) => {
                let shed = open.close_oldest_idle();
                match tokio::time::timeout(WAIT_FOR_ROOM, Arc::clone(&room).acquire_owned()).await {
                    Ok(Ok(permit)) => {
                        tracing::debug!(%peer, shed, "connection limit reached; made room");
                        permit
                    }
                    _ => {
                        tracing::warn!(
                            %peer,
                            max_connections = max,
                            "connection limit reached with every connection busy; closed a new one"
                        );
                        drop(stream);
                        continue;
                    }
                }
            }
        };
        let slot = open.add();
        let app = app.clone();
        let mut stopping = stopping.clone();
        let open = Arc::clone(&open);
        tokio::spawn(async move {
            connection(stream, peer, app, limits, &slot, &mut stopping).await;
            open.remove(slot.id);
            drop(permit);
        });
    }
    drop(listener);
    let _ = stop.send(true);
    let all = u32::try_from(max).unwrap_or(u32::MAX);
    let _ = tokio::time::timeout(DRAIN, room.acquire_many(all)).await;
    Ok(())
}

/// Serves one connection until it ends, is closed to make room, or idles too long.
async fn connection(
    stream: TcpStream,
    peer: std::net::SocketAddr,
    app: Router,
    limits: Limits,
    slot: &Arc<Slot>,
    stopping: &mut watch::Receiver<bool>,
) {
    let activity = Arc::new(Activity::new());
    let io = TokioIo::new(Watched {
        inner: stream,
        activity: Arc::clone(&activity),
    });
    let busy = Arc::clone(slot);
    let service = hyper::service::service_fn(move |mut request: Request<Incoming>| {
        let app = app.clone();
        let busy = Busy::new(&busy);
        request.extensions_mut().insert(ConnectInfo(peer));
        async move {
            let _busy = busy;
            let answer = tokio::time::timeout(limits.request_timeout, app.oneshot(request));
            Ok::<_, std::convert::Infallible>(match answer.await {
                Ok(Ok(response)) => response,
                Ok(Err(never)) => match never {},
                Err(_) => too_slow(limits.request_timeout),
            })
        }
    });
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        .keep_alive(true);
    let conn = builder.serve_connection(io, service);
    tokio::pin!(conn);
    let mut draining = false;
    loop {
        let idle_until = activity.last() + limits.idle_timeout;
        tokio::select! {
            result = conn.as_mut() => {
                if let Err(err) = result {
                    tracing::debug!(%peer, error = %err, "dashboard connection ended");
                }
                return;
            }
            () = slot.close.notified() => {
                tracing::debug!(%peer, "closed an idle dashboard connection to make room");
                return;
            }
            changed = stopping.changed(), if !draining => {
                draining = true;
                if changed.is_ok() {
                    conn.as_mut().graceful_shutdown();
                }
            }
            () = tokio::time::sleep_until(idle_until) => {
                if activity.last() + limits.idle_timeout <= Instant::now() {
                    tracing::debug!(%peer, "closed a dashboard connection on which nothing moved");
                    return;
                }
            }
        }
    }
}

/// The answer of a handler that ran out of time.
fn too_slow(limit: Duration) -> Response {
    tracing::warn!(?limit, "a dashboard request took too long; answered 503");
    (
        StatusCode::SERVICE_UNAVAILABLE,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        "the dashboard took too long to answer this request; try again\n",
    )
        .into_response()
}

/// The open connections, oldest first.
#[derive(Default)]
struct Open {
    slots: Mutex<BTreeMap<u64, Arc<Slot>>>,
    next: AtomicU64,
}

/// One open connection, as [`Open`] sees it.
struct Slot {
    id: u64,
    /// Requests in progress on it.
    busy: AtomicUsize,
    /// Set once it has been told to close.
    closing: AtomicBool,
    close: Notify,
}

impl Open {
    fn add(&self) -> Arc<Slot> {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let slot = Arc::new(Slot {
            id,
            busy: AtomicUsize::new(0),
            closing: AtomicBool::new(false),
            close: Notify::new(),
        });
        self.lock().insert(id, Arc::clone(&slot));
        slot
    }

    fn remove(&self, id: u64) {
        self.lock().remove(&id);
    }

    /// Tells the oldest connection with no request in progress to close; whether there was
    /// one.
    fn close_oldest_idle(&self) -> bool {
        let slots = self.lock();
        let victim = slots
            .values()
            .find(|s| s.busy.load(Ordering::Acquire) == 0 && !s.closing.load(Ordering::Acquire));
        match victim {
            Some(slot) => {
                slot.closing.store(true, Ordering::Release);
                slot.close.notify_one();
                true
            }
            None => false,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<u64, Arc<Slot>>> {
        // A panic while holding the lock leaves the map whole: every change is one call.
        self.slots
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// Marks its connection busy while it lives (a request is being answered).
struct Busy(Arc<Slot>);

impl Busy {
    fn new(slot: &Arc<Slot>) -> Busy {
        slot.busy.fetch_add(1, Ordering::AcqRel);
        Busy(Arc::clone(slot))
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        self.0.busy.fetch_sub(1, Ordering::AcqRel);
    }
}

/// When a byte last moved on a connection, in milliseconds since it was accepted.
struct Activity {
    start: Instant,
    last_ms: AtomicU64,
}

impl Activity {
    fn new() -> Activity {
        Activity {
            start: Instant::now(),
            last_ms: AtomicU64::new(0),
        }
    }

    fn touch(&self) {
        let ms = u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_ms.store(ms, Ordering::Relaxed);
    }

    fn last(&self) -> Instant {
        self.start + Duration::from_millis(self.last_ms.load(Ordering::Relaxed))
    }
}

/// A stream that records in [`Activity`] every read or write that moved bytes.
struct Watched {
    inner: TcpStream,
    activity: Arc<Activity>,
}

impl AsyncRead for Watched {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let poll = Pin::new(&mut self.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.activity.touch();
        }
        poll
    }
}

impl AsyncWrite for Watched {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let poll = Pin::new(&mut self.inner).poll_write(cx, buf);
        if matches!(poll, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.touch();
        }
        poll
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let poll = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if matches!(poll, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.touch();
        }
        poll
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
