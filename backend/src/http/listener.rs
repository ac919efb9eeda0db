//! Accepting and serving connections, plain HTTP and TLS alike, under stated limits: at most
//! `server.max-connections` at once and `server.max-connections-per-ip` from one address (a
//! connection beyond either is closed at once, before a byte is read: cheap to refuse, and the
//! client retries elsewhere); request headers (and a TLS handshake) within
//! `server.header-read-timeout`, which is also how long an idle keep-alive connection stays
//! open; HTTP/2 with a bounded number of streams and keep-alive pings. A shutdown stops
//! accepting, lets requests in flight finish for `server.shutdown-grace`, then closes the rest.

use axum::extract::ConnectInfo;
use axum::Router;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use std::collections::HashMap;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tower::ServiceExt;

use crate::config::ServerSettings;
use crate::engine::metrics::Metrics;

/// Streams one HTTP/2 connection may open at once.
const MAX_H2_STREAMS: u32 = 256;

/// The limits of [`serve`], from `server.*`.
#[derive(Debug, Clone)]
pub struct ConnectionLimits {
    pub max_connections: usize,
    pub max_connections_per_ip: usize,
    pub header_read_timeout: Duration,
    pub shutdown_grace: Duration,
}

impl ConnectionLimits {
    pub fn from_settings(s: &ServerSettings) -> Self {
        Self {
            max_connections: s.max_connections,
            max_connections_per_ip: s.max_connections_per_ip,
            header_read_timeout: Duration::from_secs_f64(s.header_read_timeout),
            shutdown_grace: Duration::from_secs_f64(s.shutdown_grace),
        }
    }
}

/// Connections open per peer address; a [`PeerSlot`] gives its place back when dropped.
#[derive(Default)]
struct PerPeer(Mutex<HashMap<IpAddr, usize>>);

struct PeerSlot {
    peers: Arc<PerPeer>,
    ip: IpAddr,
}

impl PerPeer {
    fn take(self: &Arc<Self>, ip: IpAddr, max: usize) -> Option<PeerSlot> {
        let mut open = self.0.lock().expect("peers lock");
        let n = open.entry(ip).or_default();
        if *n >= max {
            return None;
        }
        *n += 1;
        Some(PeerSlot {
            peers: Arc::clone(self),
            ip,
        })
    }
}

impl Drop for PeerSlot {
    fn drop(&mut self) {
        let mut open = self.peers.0.lock().expect("peers lock");
        if let Some(n) = open.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                open.remove(&self.ip);
            }
        }
    }
}

/// What a connection holds while it is open.
struct Admission {
    _total: OwnedSemaphorePermit,
    _peer: PeerSlot,
}

/// Serves `router` on `listener` until `shutdown` resolves, then drains for the grace period.
pub async fn serve(
    listener: TcpListener,
    tls: Option<Arc<rustls::ServerConfig>>,
    router: Router,
    limits: ConnectionLimits,
    metrics: Arc<Metrics>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let acceptor = tls.map(tokio_rustls::TlsAcceptor::from);
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .keep_alive(true);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(MAX_H2_STREAMS)
        .keep_alive_interval(Some(Duration::from_secs(30)))
        .keep_alive_timeout(Duration::from_secs(20));
    let builder = Arc::new(builder);
    let total = Arc::new(Semaphore::new(limits.max_connections));
    let peers = Arc::new(PerPeer::default());
    let graceful = GracefulShutdown::new();
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of file descriptors, or a connection reset before it was accepted:
                    // back off a moment rather than spin on the error.
                    tracing::warn!(error = %e, "accepting a connection failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let Ok(total) = Arc::clone(&total).try_acquire_owned() else {
            metrics.connections_refused.inc();
            drop(stream);
            continue;
        };
        let Some(peer_slot) = peers.take(peer.ip(), limits.max_connections_per_ip) else {
            metrics.connections_refused.inc();
            drop(stream);
            continue;
        };
        let admission = Admission {
            _total: total,
            _peer: peer_slot,
        };
        let _ = stream.set_nodelay(true);
        let watcher = graceful.watcher();
        let builder = Arc::clone(&builder);
        let router = router.clone();
        let acceptor = acceptor.clone();
        let handshake_timeout = limits.header_read_timeout;
        tokio::spawn(async move {
            let _admission = admission;
            let service = hyper::service::service_fn(move |mut request: hyper::Request<hyper::body::Incoming>| {
                request.extensions_mut().insert(ConnectInfo(peer));
                router.clone().oneshot(request)
            });
            match acceptor {
                None => {
                    let connection = builder.serve_connection_with_upgrades(TokioIo::new(stream), service);
                    let _ = watcher.watch(connection.into_owned()).await;
                }
                Some(acceptor) => {
                    let Some(stream) = handshake(&acceptor, stream, handshake_timeout).await else {
                        return;
                    };
                    let connection = builder.serve_connection_with_upgrades(TokioIo::new(stream), service);
                    let _ = watcher.watch(connection.into_owned()).await;
                }
            }
        });
    }
    drop(listener);
    tokio::select! {
        () = graceful.shutdown() => {}
        () = tokio::time::sleep(limits.shutdown_grace) => {
            tracing::warn!(grace = ?limits.shutdown_grace, "connections still open after the shutdown grace: closed");
        }
    }
    Ok(())
}

/// A TLS handshake, within the header timeout (a client that starts one and stalls holds
/// nothing for longer than one that stalls its headers).
async fn handshake(
    acceptor: &tokio_rustls::TlsAcceptor,
    stream: TcpStream,
    within: Duration,
) -> Option<tokio_rustls::server::TlsStream<TcpStream>> {
    match tokio::time::timeout(within, acceptor.accept(stream)).await {
        Ok(Ok(stream)) => Some(stream),
        Ok(Err(e)) => {
            tracing::debug!(error = %e, "TLS handshake failed");
            None
        }
        Err(_) => {
            tracing::debug!("TLS handshake timed out");
            None
        }
    }
}

/// The peer address of a request, when it came through [`serve`].
pub fn peer(request: &axum::extract::Request) -> Option<SocketAddr> {
    request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|ConnectInfo(a)| *a)
}
