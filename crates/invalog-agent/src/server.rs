//! The agent's HTTP/1.1 server loop, shared by the starting routes
//! (`super::starting`), the full API (`super::http`) and the probe service
//! (`invalog::probe::service`), with limits that
//! keep one slow or idle client from holding the agent: a client must send
//! a request's headers within [`HEADER_READ_TIMEOUT`], and the same timer
//! closes a keep-alive connection that stays idle that long between
//! requests; an answer whose writing makes no progress for
//! [`WRITE_STALL_TIMEOUT`] (a client that does not read) closes the
//! connection; at most [`MAX_CONNECTIONS`] connections are served at once,
//! further ones wait in the kernel's accept queue until one closes (queued,
//! not refused: with the timeouts above a slot frees within seconds); and
//! shutdown stops accepting at once, lets requests in flight finish for
//! [`SHUTDOWN_GRACE`], then drops every connection still open.
//!
//! axum's own `serve` has no header timeout, no connection cap and waits
//! for every connection on graceful shutdown, so this module drives hyper's
//! HTTP/1 connection builder directly from a tokio accept loop.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// How long a client has to send a request's headers, and how long a
/// keep-alive connection may stay idle between requests.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(5);

/// How long writing an answer may make no progress (the client does not
/// read it) before the connection is closed.
pub const WRITE_STALL_TIMEOUT: Duration = Duration::from_secs(10);

/// Connections served at once; more wait to be accepted.
pub const MAX_CONNECTIONS: usize = 128;

/// How long requests in flight may take to finish once shutdown begins.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(3);

/// How long the accept loop pauses after an error such as too many open
/// files, instead of spinning.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(200);

/// The limits of one server.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    pub header_read_timeout: Duration,
    pub write_stall_timeout: Duration,
    pub max_connections: usize,
    pub shutdown_grace: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            header_read_timeout: HEADER_READ_TIMEOUT,
            write_stall_timeout: WRITE_STALL_TIMEOUT,
            max_connections: MAX_CONNECTIONS,
            shutdown_grace: SHUTDOWN_GRACE,
        }
    }
}

/// A server that has stopped accepting; [`Draining::finished`] waits until
/// its connections are done (at most the shutdown grace).
pub(crate) struct Draining(TaskTracker);

impl Draining {
    /// Waits for the connections still open, each bounded by the grace.
    pub async fn finished(self) {
        self.0.wait().await;
    }
}

/// Serves `router` on `listener` within `limits` until `shutdown`
/// completes, then stops accepting and tells every connection to close
/// after its request in flight. Returns as soon as the listener is no
/// longer used; await [`Draining::finished`] for the connections.
pub(crate) async fn accept_until(
    listener: TcpListener,
    router: Router,
    limits: Limits,
    shutdown: impl Future<Output = ()>,
) -> Draining {
    let permits = Arc::new(Semaphore::new(limits.max_connections));
    let connections = TaskTracker::new();
    let closing = CancellationToken::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let permit = tokio::select! {
            _ = shutdown.as_mut() => break,
            permit = permits.clone().acquire_owned() => permit.expect("the semaphore is never closed"),
        };
        let stream = tokio::select! {
            _ = shutdown.as_mut() => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _peer)) => stream,
                Err(error) => {
                    tracing::debug!(%error, "HTTP accept failed");
                    if !is_per_connection(&error) {
                        tokio::select! {
                            _ = shutdown.as_mut() => break,
                            _ = tokio::time::sleep(ACCEPT_ERROR_PAUSE) => {}
                        }
                    }
                    continue;
                }
            },
        };
        connections.spawn(connection(
            stream,
            router.clone(),
            limits,
            closing.clone(),
            permit,
        ));
    }
    closing.cancel();
    connections.close();
    Draining(connections)
}

/// Serves one connection; on `closing`, finishes the request in flight
/// within the grace, then drops the connection.
async fn connection(
    stream: TcpStream,
    router: Router,
    limits: Limits,
    closing: CancellationToken,
    _permit: OwnedSemaphorePermit,
) {
    let _ = stream.set_nodelay(true);
    let mut stream = tokio_io_timeout::TimeoutStream::new(stream);
    stream.set_write_timeout(Some(limits.write_stall_timeout));
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout);
    let io = TokioIo::new(Box::pin(stream));
    let conn = builder.serve_connection(io, TowerToHyperService::new(router));
    let mut conn = std::pin::pin!(conn);
    let outcome = tokio::select! {
        outcome = conn.as_mut() => outcome,
        _ = closing.cancelled() => {
            conn.as_mut().graceful_shutdown();
            match tokio::time::timeout(limits.shutdown_grace, conn).await {
                Ok(outcome) => outcome,
                Err(_) => {
                    tracing::debug!("HTTP connection still open after the shutdown grace; dropped");
                    return;
                }
            }
        }
    };
    if let Err(error) = outcome {
        tracing::debug!(%error, "HTTP connection ended with an error");
    }
}

/// Errors that concern one connection only (the client gave up before it
/// was accepted); anything else (out of file descriptors) pauses the loop.
fn is_per_connection(error: &std::io::Error) -> bool {
    use std::io::ErrorKind::*;
    matches!(
        error.kind(),
        ConnectionAborted | ConnectionReset | ConnectionRefused | Interrupted
    )
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use axum::routing::get;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    /// A client that asks for a large answer and never reads it holds its
    /// connection only until the write stall timeout; with a cap of one
    /// connection, the next client is answered then.
    #[tokio::test]
    async fn a_client_that_does_not_read_is_dropped_after_the_write_stall_timeout() {
        let big = "x".repeat(64 << 20);
        let router = Router::new()
            .route("/big", get(move || std::future::ready(big.clone())))
            .route("/small", get(|| async { "ok" }));
        let limits = Limits {
            max_connections: 1,
            write_stall_timeout: Duration::from_millis(300),
            ..Limits::default()
        };
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let stop = CancellationToken::new();
        let server = tokio::spawn(accept_until(
            listener,
            router,
            limits,
            stop.clone().cancelled_owned(),
        ));

        let mut stalled = TcpStream::connect(address).await.unwrap();
        stalled
            .write_all(b"GET /big HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        let started = Instant::now();
        let mut next = TcpStream::connect(address).await.unwrap();
        next.write_all(b"GET /small HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .await
            .unwrap();
        let mut answer = String::new();
        tokio::time::timeout(Duration::from_secs(20), next.read_to_string(&mut answer))
            .await
            .expect("answered once the stalled connection is dropped")
            .unwrap();
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        assert!(started.elapsed() >= Duration::from_millis(300));
        drop(stalled);
        stop.cancel();
        server.await.unwrap().finished().await;
    }
}
