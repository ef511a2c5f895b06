//! `eco serve`'s end of the daemon's socket: the typed wire, as the CLI
//! speaks it, but async (one connection per HTTP request, or per stream).
//! It never starts a daemon: with none running, the API says so.

use tokio::io::BufReader;
use tokio::net::UnixStream;
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};

use crate::ipc::codec::{self, CodecError};
use crate::ipc::proto::{Envelope, ErrorReply, PROTOCOL_VERSION, Request, Response};
use crate::paths::Paths;

/// How long a single answer may take (a busy daemon sends heartbeats,
/// which reset nothing here: `restart` of a slow app may take long, so
/// this is generous).
const ANSWER_LIMIT: std::time::Duration = std::time::Duration::from_secs(300);

#[derive(Debug, thiserror::Error)]
pub enum WireError {
    #[error(
        "no eco daemon answers on {socket}: {source}\n  help: any eco command (`eco ls`) starts it"
    )]
    NotRunning {
        socket: String,
        source: std::io::Error,
    },
    #[error("lost the connection to the eco daemon: {0}")]
    Codec(#[from] CodecError),
    #[error("the eco daemon closed the connection without an answer")]
    Closed,
    #[error("the eco daemon did not answer within {} s", ANSWER_LIMIT.as_secs())]
    TimedOut,
    #[error("{0}")]
    Daemon(ErrorReply),
}

/// One open conversation with the daemon.
pub struct Conversation {
    reader: BufReader<OwnedReadHalf>,
    // Kept so the daemon does not see the client leave.
    _writer: OwnedWriteHalf,
}

impl Conversation {
    /// Connects and sends `request`.
    pub async fn open(paths: &Paths, request: Request) -> Result<Conversation, WireError> {
        let socket = paths.socket();
        let stream =
            UnixStream::connect(&socket)
                .await
                .map_err(|source| WireError::NotRunning {
                    socket: socket.display().to_string(),
                    source,
                })?;
        let (reader, mut writer) = stream.into_split();
        let envelope = Envelope {
            version: PROTOCOL_VERSION,
            request,
            // eco serve ignores warnings: no version check asked for.
            eco: None,
        };
        codec::write(&mut writer, &envelope).await?;
        Ok(Conversation {
            reader: BufReader::new(reader),
            _writer: writer,
        })
    }

    /// The next response that is not a heartbeat, a progress count or a
    /// warning (the API answers once the work is done); an error
    /// reply becomes [`WireError::Daemon`]; `None` when the daemon closed.
    pub async fn next(&mut self) -> Result<Option<Response>, WireError> {
        loop {
            match codec::read::<Response, _>(&mut self.reader).await? {
                Some(Response::Working | Response::Progress(_) | Response::Warning(_)) => {}
                Some(Response::Error(err)) => return Err(WireError::Daemon(err)),
                other => return Ok(other),
            }
        }
    }
}

/// One request, one answer.
pub async fn call(paths: &Paths, request: Request) -> Result<Response, WireError> {
    let work = async {
        let mut conversation = Conversation::open(paths, request).await?;
        conversation.next().await?.ok_or(WireError::Closed)
    };
    tokio::time::timeout(ANSWER_LIMIT, work)
        .await
        .map_err(|_| WireError::TimedOut)?
}
