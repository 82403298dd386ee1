//! The HTTP server's accept loop, with the limits a hostile client meets before any handler:
//! at most `MAX_CONNECTIONS` open at once (past it new ones wait in the kernel's backlog until
//! one closes), a request's head read within `HEADER_READ_TIMEOUT` (no slow or idle client
//! keeps a place for long), a head of at most `MAX_HEAD_BYTES`, and answers the peer reads (a
//! write waits at most `WRITE_STALL_TIMEOUT`). A connection upgraded to a
//! WebSocket keeps its place until the socket closes (its other limits are in query-graphql's
//! `websocket`).

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use axum::extract::ConnectInfo;
use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tower::ServiceExt;

/// Connections open at once (HTTP keep-alive and WebSockets alike).
pub const MAX_CONNECTIONS: usize = 512;
/// Time to send a request's head, from the connection's start or the previous answer.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a write may wait for the peer to read before the connection is closed.
pub const WRITE_STALL_TIMEOUT: Duration = Duration::from_secs(20);
/// Largest request head (request line and headers): a longer one is answered 431. (hyper
/// checks its read buffer's limit before each read, and a read may add up to that limit
/// again: the buffer is half of this, and heads up to that half always pass.)
pub const MAX_HEAD_BYTES: usize = 64 * 1024;

/// Serves `app` on `listener` until `shutdown` completes, then lets open requests finish.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    // Told to every connection at shutdown; its receivers are the connections still open.
    let (closing, watching) = tokio::sync::watch::channel(false);
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT)
        .max_buf_size(MAX_HEAD_BYTES / 2);
    tokio::pin!(shutdown);
    loop {
        let slot = tokio::select! {
            slot = slots.clone().acquire_owned() => slot,
            () = &mut shutdown => break,
        };
        // The semaphore is never closed.
        let Ok(slot) = slot else { break };
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of file descriptors, a connection reset before it was accepted:
                    // the listener itself is fine.
                    tracing::warn!(error = %e, "accepting a connection failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let app = app.clone();
        let service = hyper::service::service_fn(move |mut request: hyper::Request<_>| {
            request
                .extensions_mut()
                .insert(ConnectInfo::<SocketAddr>(peer));
            let answer = app.clone().oneshot(request.map(axum::body::Body::new));
            async move { Ok::<_, Infallible>(answer.await.unwrap_or_else(|e| match e {})) }
        });
        // The place goes with the socket: an upgraded connection (a WebSocket) keeps it until
        // the socket closes, after hyper has handed it over.
        let stream = CappedStream::new(stream, slot);
        let connection = http
            .serve_connection(TokioIo::new(stream), service)
            .with_upgrades();
        let mut closing = watching.clone();
        tokio::spawn(async move {
            let mut connection = std::pin::pin!(connection);
            let ended = tokio::select! {
                ended = connection.as_mut() => ended,
                _ = closing.changed() => {
                    // The request being answered finishes; no other starts.
                    connection.as_mut().graceful_shutdown();
                    connection.await
                }
            };
            if let Err(e) = ended {
                tracing::debug!(%peer, error = %e, "connection ended");
            }
            drop(closing);
        });
    }
    drop((listener, watching));
    let _ = closing.send(true);
    closing.closed().await;
    Ok(())
}

/// An accepted connection holding its place until dropped, and closed when a write makes no
/// progress for `WRITE_STALL_TIMEOUT` (a peer that sends requests and reads no answer).
struct CappedStream {
    io: TcpStream,
    _slot: OwnedSemaphorePermit,
    /// Running while a write waits for the peer to read.
    stalled: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl CappedStream {
    fn new(io: TcpStream, slot: OwnedSemaphorePermit) -> Self {
        Self {
            io,
            _slot: slot,
            stalled: None,
        }
    }

    /// `polled` (a write's outcome), unless the write has waited too long.
    fn unless_stalled<T>(
        &mut self,
        cx: &mut Context<'_>,
        polled: Poll<io::Result<T>>,
    ) -> Poll<io::Result<T>> {
        if polled.is_ready() {
            self.stalled = None;
            return polled;
        }
        let stall = self
            .stalled
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(WRITE_STALL_TIMEOUT)));
        match stall.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "the peer read nothing while an answer waited",
            ))),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl AsyncRead for CappedStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_read(cx, buf)
    }
}

impl AsyncWrite for CappedStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.io).poll_write(cx, buf);
        this.unless_stalled(cx, polled)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.io).poll_write_vectored(cx, bufs);
        this.unless_stalled(cx, polled)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.io).poll_flush(cx);
        this.unless_stalled(cx, polled)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.io).poll_shutdown(cx);
        this.unless_stalled(cx, polled)
    }
}
