//! `eco serve`: Prometheus metrics, a JSON API and the dashboard over
//! HTTP. A process of its own that talks to the daemon as the CLI does
//! (over the typed wire), so the daemon's memory and attack surface do not
//! change, and eco can supervise it as an ordinary app.
//!
//! `routes` is the table and the JSON handlers, `auth` the token and the
//! Host/Origin rules, `sse` the streams, `metrics` the text format,
//! `openapi` the document, `wire` the daemon connection.

pub mod auth;
pub mod dashboard;
pub mod metrics;
pub mod openapi;
pub mod routes;
pub mod sse;
pub mod wire;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response as HttpResponse};

use crate::error::UsageError;
use crate::ipc::proto::{Request, Response};
use routes::{Server, Shared};

/// PM2's old `pm2 web` port.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:9615";

/// What `eco serve` was asked for.
#[derive(Debug, Clone)]
pub struct Options {
    pub listen: String,
    pub token_file: Option<PathBuf>,
    pub read_only: bool,
}

/// Runs `eco serve` until SIGINT or SIGTERM.
pub fn main(options: &Options) -> anyhow::Result<i32> {
    let listen = parse_listen(&options.listen)?;
    let token = match &options.token_file {
        Some(path) => Some(auth::load_token(path).map_err(|e| UsageError(e.to_string()))?),
        None if !listen.ip().is_loopback() => {
            return Err(UsageError(format!(
                "refusing to listen on {listen} without a token: anyone who reaches it could read every app's state\n  help: add --token-file PATH (a file of mode 600 holding the token), or listen on 127.0.0.1"
            ))
            .into());
        }
        None => None,
    };
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("ECO_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .try_init();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(run(listen, token, options.read_only))?;
    Ok(0)
}

/// `ADDR:PORT`, `[V6]:PORT` or `localhost:PORT`.
fn parse_listen(listen: &str) -> Result<SocketAddr, UsageError> {
    if let Some(port) = listen.strip_prefix("localhost:")
        && let Ok(port) = port.parse::<u16>()
    {
        return Ok(SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port));
    }
    listen.parse().map_err(|_| {
        UsageError(format!(
            "--listen {listen:?} is not an address and port\n  help: e.g. --listen {DEFAULT_LISTEN}, or --listen 0.0.0.0:9615 --token-file PATH"
        ))
    })
}

async fn run(listen: SocketAddr, token: Option<String>, read_only: bool) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("cannot listen on {listen} (is another eco serve running? --listen picks another address)"))?;
    let bound = listener.local_addr()?;
    let mode = match (&token, read_only) {
        (Some(_), false) => "control needs the token",
        (Some(_), true) => "read-only (--read-only)",
        (None, _) => "read-only (no --token-file)",
    };
    // The first line says where it listens (`--listen 127.0.0.1:0` picks a port).
    println!("eco serve: listening on http://{bound} ({mode})");
    let server: Shared = Arc::new(Server {
        paths: crate::paths::Paths::from_env(),
        listen: bound,
        token,
        read_only,
        active: Arc::new(tokio::sync::Notify::new()),
    });
    tokio::spawn(release_when_idle(Arc::clone(&server.active)));
    let app = routes::router(server);
    // As the daemon does: start-up code (argument parsing, the router's
    // construction) is done with, so only what serving runs stays mapped.
    crate::daemon::startup::map_only_used_code();
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        served = axum::serve(listener, app) => served.context("the HTTP server stopped")?,
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    Ok(())
}

/// A scrape of 1,000 instances faults in the code it runs and leaves a
/// megabyte or two of freed heap: once requests stop for a while (2 s,
/// longer when requests keep coming back soon after, see
/// [`IdleDrop`](crate::daemon::idle_drop::IdleDrop)), the code pages are
/// dropped (they fault back in from the page cache) and the freed heap is
/// returned to the system. One wake-up per burst of requests; none while
/// idle.
async fn release_when_idle(active: Arc<tokio::sync::Notify>) {
    // Every request here runs what a scrape runs: worth keeping. The
    // code drop trims the heap too.
    let never = tokio_util::sync::CancellationToken::new();
    crate::daemon::startup::drop_code_when_idle(&active, || true, &never, || {}).await;
}

/// `GET /metrics`: the Prometheus text format (0.0.4).
async fn metrics_page(State(server): State<Shared>) -> HttpResponse {
    let began = std::time::Instant::now();
    let stats = match wire::call(&server.paths, Request::Stats).await {
        Ok(Response::Stats(stats)) => stats,
        Ok(other) => return routes::unexpected(&other),
        Err(err) => return routes::failure(&err),
    };
    let asked = began.elapsed();
    let text = tokio::task::spawn_blocking(move || {
        let usage = metrics::proc_usage(stats.instances.iter().filter_map(|i| i.pid));
        let daemon = metrics::proc_process(stats.daemon_pid);
        let read = began.elapsed();
        let text = metrics::render(&stats, &usage, daemon.as_ref());
        tracing::debug!(?asked, ?read, rendered = ?began.elapsed(), "metrics");
        text
    })
    .await
    .unwrap_or_default();
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        text,
    )
        .into_response()
}
