//! The two streams: an app's log lines (`/logs?follow=1`) and the
//! daemon's events (`/events`), as server-sent events. Each HTTP client
//! has its own connection to the daemon, read by a task that hands what
//! it reads to a small bounded channel; a client that leaves closes the
//! channel, which ends the task and the daemon connection.

use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll};

use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response as HttpResponse};
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

use super::routes::{MAX_LINES, Shared, failure, json, problem, unexpected};
use super::wire::{self, Conversation};
use crate::ipc::proto::{LogFile, LogStream, Request, Response};

/// Events waiting for a slow HTTP client; the daemon drops lines for a
/// follower too slow to read them (and says how many).
const CHANNEL: usize = 64;

/// The receiving end of a stream, as the `Stream` axum's `Sse` takes.
struct Channel(mpsc::Receiver<Event>);

impl futures_core::Stream for Channel {
    type Item = Result<Event, Infallible>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.0.poll_recv(cx).map(|event| event.map(Ok))
    }
}

/// One log line, as the API shows it.
#[derive(Debug, Serialize)]
pub struct LogLine {
    pub project: String,
    pub app: String,
    pub stream: LogStream,
    pub text: String,
}

#[derive(Deserialize)]
pub struct LogsQuery {
    lines: Option<usize>,
    follow: Option<String>,
}

/// `GET /api/v1/apps/{app}/logs?lines=N[&follow=1]`.
pub async fn logs(
    State(server): State<Shared>,
    Path(app): Path<String>,
    query: Result<Query<LogsQuery>, QueryRejection>,
) -> HttpResponse {
    let Ok(Query(query)) = query else {
        return bad_query();
    };
    let follow = match query.follow.as_deref() {
        None | Some("0" | "false") => false,
        Some("1" | "true") => true,
        Some(_) => return bad_query(),
    };
    let lines = query.lines.unwrap_or(100);
    if lines > MAX_LINES {
        return bad_query();
    }
    let request = Request::LogFiles {
        target: Some(app.clone()),
    };
    let files = match wire::call(&server.paths, request).await {
        Ok(Response::LogFiles { files }) => files,
        Ok(other) => return unexpected(&other),
        Err(err) => return failure(&err),
    };
    let tail = tokio::task::spawn_blocking(move || tail(&files, lines))
        .await
        .unwrap_or_default();
    if !follow {
        return json(&tail);
    }
    let request = Request::Follow {
        target: Some(app),
        out: true,
        err: true,
    };
    let conversation = match open_stream(&server, request).await {
        Ok(conversation) => conversation,
        Err(refused) => return refused,
    };
    let (tx, rx) = mpsc::channel(CHANNEL);
    tokio::spawn(follow_lines(conversation, tail, tx));
    Sse::new(Channel(rx))
        .keep_alive(KeepAlive::default())
        .into_response()
}

fn bad_query() -> HttpResponse {
    problem(
        StatusCode::BAD_REQUEST,
        "lines must be a whole number up to 10000, and follow 0 or 1",
        Some("GET /api/v1/apps/APP/logs?lines=100&follow=1"),
    )
}

/// The last `lines` lines of each file, oldest file first.
fn tail(files: &[LogFile], lines: usize) -> Vec<LogLine> {
    let mut out = Vec::new();
    for file in files {
        for text in crate::logs::tail(&file.path, lines) {
            out.push(LogLine {
                project: file.project.clone(),
                app: file.app.clone(),
                stream: file.stream,
                text,
            });
        }
    }
    out
}

/// Opens a stream and reads its first answer (`Following`/`Watching`).
async fn open_stream(server: &Shared, request: Request) -> Result<Conversation, HttpResponse> {
    let mut conversation = Conversation::open(&server.paths, request)
        .await
        .map_err(|e| failure(&e))?;
    match conversation.next().await {
        Ok(Some(Response::Following | Response::Watching)) => Ok(conversation),
        Ok(Some(other)) => Err(unexpected(&other)),
        Ok(None) => Err(failure(&wire::WireError::Closed)),
        Err(err) => Err(failure(&err)),
    }
}

fn sse_json<T: Serialize>(name: &str, value: &T) -> Event {
    Event::default()
        .event(name)
        .data(serde_json::to_string(value).unwrap_or_default())
}

/// Sends the tail, then each new line, until the client or daemon leaves.
async fn follow_lines(mut conversation: Conversation, tail: Vec<LogLine>, tx: mpsc::Sender<Event>) {
    for line in &tail {
        if tx.send(sse_json("line", line)).await.is_err() {
            return;
        }
    }
    loop {
        let next = tokio::select! {
            next = conversation.next() => next,
            () = tx.closed() => return,
        };
        let event = match next {
            Ok(Some(Response::Line { text, app, stream })) => sse_json(
                "line",
                &serde_json::json!({ "app": app, "stream": stream, "text": text }),
            ),
            Ok(Some(Response::Skipped { count })) => {
                sse_json("skipped", &serde_json::json!({ "count": count }))
            }
            Ok(Some(_)) => continue,
            Ok(None) | Err(_) => return,
        };
        if tx.send(event).await.is_err() {
            return;
        }
    }
}

/// `GET /api/v1/events`: state changes, restarts with reason, saves.
pub async fn events(State(server): State<Shared>) -> HttpResponse {
    let conversation = match open_stream(&server, Request::Events).await {
        Ok(conversation) => conversation,
        Err(refused) => return refused,
    };
    let (tx, rx) = mpsc::channel(CHANNEL);
    tokio::spawn(forward_events(conversation, tx));
    Sse::new(Channel(rx))
        .keep_alive(KeepAlive::default())
        .into_response()
}

async fn forward_events(mut conversation: Conversation, tx: mpsc::Sender<Event>) {
    loop {
        let next = tokio::select! {
            next = conversation.next() => next,
            () = tx.closed() => return,
        };
        let event = match next {
            Ok(Some(Response::Event { event })) => {
                let name = match &event {
                    crate::ipc::proto::FeedEvent::State { .. } => "state",
                    crate::ipc::proto::FeedEvent::Restart { .. } => "restart",
                    crate::ipc::proto::FeedEvent::Save { .. } => "save",
                    crate::ipc::proto::FeedEvent::Lagged { .. } => "lagged",
                };
                sse_json(name, &event)
            }
            Ok(Some(_)) => continue,
            Ok(None) | Err(_) => return,
        };
        if tx.send(event).await.is_err() {
            return;
        }
    }
}
