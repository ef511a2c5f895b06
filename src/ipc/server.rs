//! The daemon's end of the socket: bind (replacing a stale socket), refuse
//! other users, read one request per connection, answer through a handler.

use std::future::Future;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::Arc;

use tokio::io::BufReader;
use tokio::net::{UnixListener, UnixStream};

use super::codec::{self, CodecError};
use super::proto::{Envelope, ErrorKind, ErrorReply, PROTOCOL_VERSION, Request, Response};

/// Answers requests; may write several responses (streams) to `reply`.
pub trait Handler: Send + Sync + 'static {
    fn handle(self: Arc<Self>, request: Request, reply: Reply) -> impl Future<Output = ()> + Send;
}

/// The writing half of one connection.
pub struct Reply {
    writer: tokio::net::unix::OwnedWriteHalf,
}

impl Reply {
    /// Sends one response; false when the client has gone.
    pub async fn send(&mut self, response: &Response) -> bool {
        codec::write(&mut self.writer, response).await.is_ok()
    }
}

/// Binds the socket with mode 0600. The caller holds the daemon lock, so
/// any socket file already there is stale and is replaced.
pub fn bind(path: &Path) -> std::io::Result<UnixListener> {
    match std::fs::remove_file(path) {
        Ok(()) => tracing::info!(socket = %path.display(), "removed a stale socket"),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
        Err(err) => return Err(err),
    }
    let listener = UnixListener::bind(path)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    Ok(listener)
}

/// Serves one connection.
pub async fn serve<H: Handler>(stream: UnixStream, handler: Arc<H>) {
    let own_uid = nix::unistd::getuid().as_raw();
    match stream.peer_cred() {
        Ok(cred) if cred.uid() == own_uid => {}
        Ok(cred) => {
            tracing::warn!(uid = cred.uid(), "refused a request from another user");
            let (_, writer) = stream.into_split();
            let mut reply = Reply { writer };
            reply
                .send(&Response::Error(ErrorReply {
                    kind: ErrorKind::Refused,
                    message: "this eco daemon belongs to another user".into(),
                    hint: Some("set ECO_HOME to a folder of your own".into()),
                }))
                .await;
            return;
        }
        Err(err) => {
            tracing::warn!(%err, "cannot read the peer's credentials");
            return;
        }
    }
    let (reader, writer) = stream.into_split();
    let mut reader = BufReader::new(reader);
    let mut reply = Reply { writer };
    let envelope = match codec::read::<Envelope, _>(&mut reader).await {
        Ok(Some(envelope)) => envelope,
        Ok(None) => return,
        Err(err) => {
            let message = match err {
                CodecError::TooLarge => err.to_string(),
                CodecError::Malformed(e) => format!("malformed request: {e}"),
                CodecError::Io(e) => format!("connection error: {e}"),
            };
            tracing::warn!(%message, "bad request");
            reply
                .send(&Response::Error(ErrorReply {
                    kind: ErrorKind::Refused,
                    message,
                    hint: Some("requests are one JSON object per line; use the eco command".into()),
                }))
                .await;
            return;
        }
    };
    if envelope.version != PROTOCOL_VERSION {
        reply
            .send(&Response::Error(ErrorReply {
                kind: ErrorKind::Refused,
                message: format!(
                    "client speaks protocol v{}, daemon v{PROTOCOL_VERSION}",
                    envelope.version
                ),
                hint: Some("run `eco kill`, then any eco command starts the new daemon".into()),
            }))
            .await;
        return;
    }
    if let Some(cli) = envelope.eco.as_deref()
        && cli != crate::version::current()
    {
        reply
            .send(&Response::Warning(super::proto::Warning::VersionDiffers {
                cli: cli.to_owned(),
                daemon: crate::version::current().to_owned(),
            }))
            .await;
    }
    handler.handle(envelope.request, reply).await;
}
