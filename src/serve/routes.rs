//! The route table (explicit: each path and method has its own handler,
//! nothing dispatches by a name taken from the request), the guard every
//! request passes (Host/Origin), and the JSON handlers.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, Request as HttpRequest, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response as HttpResponse};
use axum::routing::{get, post};
use serde::Deserialize;

use super::auth;
use super::dashboard;
use super::wire::{self, WireError};
use crate::ipc::proto::{ErrorKind, ErrorReply, Request, Response};
use crate::paths::Paths;
use crate::view::AppView;

/// What an env value shows to a caller without the token.
pub const REDACTED: &str = "<redacted>";

/// The most log lines one request returns.
pub const MAX_LINES: usize = 10_000;

/// What every handler shares.
pub struct Server {
    pub paths: Paths,
    /// The address actually bound (Host and Origin must name it).
    pub listen: SocketAddr,
    /// None: no token file, so no caller may control anything.
    pub token: Option<String>,
    /// `--read-only`: control refused even with the token.
    pub read_only: bool,
    /// Told of every request (memory is given back once they stop).
    pub active: Arc<tokio::sync::Notify>,
}

pub type Shared = Arc<Server>;

impl Server {
    /// True when the request carries the token.
    pub fn holds_token(&self, headers: &HeaderMap) -> bool {
        let given = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(auth::bearer);
        match (&self.token, given) {
            (Some(token), Some(given)) => auth::same_token(token, given),
            _ => false,
        }
    }

    /// Ok when the caller may control apps; else the refusal.
    fn may_control(&self, headers: &HeaderMap) -> Result<(), HttpResponse> {
        if self.token.is_none() || self.read_only {
            return Err(problem(
                StatusCode::FORBIDDEN,
                "this eco serve is read-only",
                Some("start it with --token-file PATH (and without --read-only) to allow control"),
            ));
        }
        if !self.holds_token(headers) {
            return Err(problem(
                StatusCode::UNAUTHORIZED,
                "control needs the token",
                Some("send `Authorization: Bearer TOKEN`, TOKEN being the token file's content"),
            ));
        }
        Ok(())
    }
}

/// Every route of `eco serve`.
pub fn router(server: Shared) -> Router {
    Router::new()
        .route(dashboard::INDEX.path, get(dashboard::index))
        .route(dashboard::SCRIPT.path, get(dashboard::script))
        .route(dashboard::STYLE.path, get(dashboard::style))
        .route("/metrics", get(super::metrics_page))
        .route("/api/v1/openapi.json", get(super::openapi::document))
        .route("/api/v1/apps", get(apps))
        .route("/api/v1/apps/{app}", get(describe))
        .route("/api/v1/apps/{app}/logs", get(super::sse::logs))
        .route("/api/v1/events", get(super::sse::events))
        .route("/api/v1/apps/{app}/start", post(start))
        .route("/api/v1/apps/{app}/stop", post(stop))
        .route("/api/v1/apps/{app}/restart", post(restart))
        .route("/api/v1/apps/{app}/reload", post(reload))
        .route("/api/v1/apps/{app}/scale", post(scale))
        .fallback(not_found)
        .layer(middleware::from_fn_with_state(Arc::clone(&server), guard))
        .with_state(server)
}

/// Refuses a request whose Host or Origin is not this server (DNS
/// rebinding: a foreign page whose name now points here), and marks every
/// answer as not to be sniffed or framed.
async fn guard(State(server): State<Shared>, request: HttpRequest, next: Next) -> HttpResponse {
    server.active.notify_one();
    let headers = request.headers();
    let host = headers.get(header::HOST).and_then(|v| v.to_str().ok());
    if !host.is_some_and(|h| auth::host_allowed(h, server.listen)) {
        return problem(
            StatusCode::FORBIDDEN,
            &format!("Host {:?} is not this server", host.unwrap_or("")),
            Some(&format!(
                "use http://{} or http://localhost:{}",
                server.listen,
                server.listen.port()
            )),
        );
    }
    if let Some(origin) = headers.get(header::ORIGIN) {
        let origin = origin.to_str().unwrap_or("");
        if !auth::origin_allowed(origin, server.listen) {
            return problem(
                StatusCode::FORBIDDEN,
                &format!("Origin {origin:?} is not this server"),
                Some("only pages served by this eco serve may call it"),
            );
        }
    }
    let mut response = next.run(request).await;
    let headers = response.headers_mut();
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    response
}

async fn not_found() -> HttpResponse {
    problem(
        StatusCode::NOT_FOUND,
        "no such endpoint",
        Some("GET /api/v1/openapi.json lists them"),
    )
}

/// A JSON error body: `{"error": ..., "hint": ...}`.
pub fn problem(status: StatusCode, error: &str, hint: Option<&str>) -> HttpResponse {
    let body = serde_json::json!({ "error": error, "hint": hint });
    (status, json_body(&body)).into_response()
}

/// A value as a JSON response.
pub fn json<T: serde::Serialize>(value: &T) -> HttpResponse {
    json_body(value).into_response()
}

fn json_body<T: serde::Serialize>(value: &T) -> ([(header::HeaderName, &'static str); 1], String) {
    let text = serde_json::to_string(value).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"));
    ([(header::CONTENT_TYPE, "application/json")], text)
}

/// The HTTP form of a failed call to the daemon.
pub fn failure(err: &WireError) -> HttpResponse {
    match err {
        WireError::Daemon(ErrorReply {
            kind,
            message,
            hint,
        }) => {
            let status = match kind {
                ErrorKind::Target => StatusCode::NOT_FOUND,
                ErrorKind::Invalid => StatusCode::BAD_REQUEST,
                ErrorKind::Failed => StatusCode::CONFLICT,
                ErrorKind::Refused => StatusCode::FORBIDDEN,
            };
            problem(status, message, hint.as_deref())
        }
        other => problem(StatusCode::SERVICE_UNAVAILABLE, &other.to_string(), None),
    }
}

/// Anything but the expected answer.
pub fn unexpected(response: &Response) -> HttpResponse {
    tracing::warn!(?response, "unexpected answer from the daemon");
    problem(
        StatusCode::BAD_GATEWAY,
        "the eco daemon answered something unexpected",
        Some("is the daemon of the same version as this eco serve? `eco update`"),
    )
}

/// `GET /api/v1/apps`: `ls --json`.
async fn apps(State(server): State<Shared>) -> HttpResponse {
    match wire::call(&server.paths, Request::List).await {
        Ok(Response::List { rows, .. }) => json(&rows),
        Ok(other) => unexpected(&other),
        Err(err) => failure(&err),
    }
}

/// `GET /api/v1/apps/{app}`: `describe --json`, env values redacted
/// unless the caller holds the token.
async fn describe(
    State(server): State<Shared>,
    Path(app): Path<String>,
    headers: HeaderMap,
) -> HttpResponse {
    let request = Request::Describe { target: app };
    match wire::call(&server.paths, request).await {
        Ok(Response::Describe { mut apps }) => {
            if !server.holds_token(&headers) {
                redact(&mut apps);
            }
            json(&apps)
        }
        Ok(other) => unexpected(&other),
        Err(err) => failure(&err),
    }
}

/// Every env value replaced by [`REDACTED`] (the names stay).
pub fn redact(apps: &mut [AppView]) {
    for app in apps {
        for value in app.spec.process.env.values_mut() {
            REDACTED.clone_into(value);
        }
        for instance in &mut app.instances {
            for value in instance.env.values_mut() {
                REDACTED.clone_into(value);
            }
        }
    }
}

/// Carries out a control request once the caller is allowed to.
async fn control(server: &Server, headers: &HeaderMap, request: Request) -> HttpResponse {
    if let Err(refused) = server.may_control(headers) {
        return refused;
    }
    match wire::call(&server.paths, request).await {
        Ok(Response::Done { command, targets }) => {
            json(&serde_json::json!({ "command": command, "targets": targets }))
        }
        Ok(other) => unexpected(&other),
        Err(err) => failure(&err),
    }
}

async fn start(State(s): State<Shared>, Path(app): Path<String>, h: HeaderMap) -> HttpResponse {
    control(&s, &h, Request::Start { target: app }).await
}

async fn stop(State(s): State<Shared>, Path(app): Path<String>, h: HeaderMap) -> HttpResponse {
    control(&s, &h, Request::Stop { target: app }).await
}

async fn restart(State(s): State<Shared>, Path(app): Path<String>, h: HeaderMap) -> HttpResponse {
    control(&s, &h, Request::Restart { target: app }).await
}

async fn reload(State(s): State<Shared>, Path(app): Path<String>, h: HeaderMap) -> HttpResponse {
    control(&s, &h, Request::Reload { target: app }).await
}

#[derive(Deserialize)]
struct ScaleQuery {
    instances: u32,
}

async fn scale(
    State(s): State<Shared>,
    Path(app): Path<String>,
    query: Result<Query<ScaleQuery>, QueryRejection>,
    h: HeaderMap,
) -> HttpResponse {
    if let Err(refused) = s.may_control(&h) {
        return refused;
    }
    let Ok(Query(ScaleQuery { instances })) = query else {
        return problem(
            StatusCode::BAD_REQUEST,
            "scale needs ?instances=N (a whole number, 0 or more)",
            Some("POST /api/v1/apps/APP/scale?instances=3"),
        );
    };
    let max = crate::config::validate::MAX_INSTANCES;
    if instances > max {
        return problem(
            StatusCode::BAD_REQUEST,
            &format!("{instances} instances is more than eco runs per app ({max})"),
            None,
        );
    }
    control(
        &s,
        &h,
        Request::Scale {
            target: app,
            instances,
        },
    )
    .await
}
