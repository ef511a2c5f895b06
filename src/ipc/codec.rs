//! Framing, for both ends of the socket: one JSON message per line, at most
//! [`MAX_MESSAGE`] bytes, checked when sending as well as when receiving.

use std::io::{BufRead, Read, Write};

use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::proto::MAX_MESSAGE;

#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    #[error("the message is larger than {MAX_MESSAGE} bytes")]
    TooLarge,
    #[error("malformed message: {0}")]
    Malformed(#[from] serde_json::Error),
    #[error("connection error: {0}")]
    Io(#[from] std::io::Error),
}

/// One message as a line, refused when over the bound.
pub fn encode<T: Serialize>(message: &T) -> Result<Vec<u8>, CodecError> {
    let mut bytes = serde_json::to_vec(message)?;
    if bytes.len() > MAX_MESSAGE {
        return Err(CodecError::TooLarge);
    }
    bytes.push(b'\n');
    Ok(bytes)
}

/// One line read with [`read_line_limit`] back into a message; `None` at a
/// clean end of stream.
fn decode<T: DeserializeOwned>(line: &[u8]) -> Result<Option<T>, CodecError> {
    if line.is_empty() {
        return Ok(None);
    }
    if line.len() > MAX_MESSAGE + 1 || (line.len() == MAX_MESSAGE + 1 && !line.ends_with(b"\n")) {
        return Err(CodecError::TooLarge);
    }
    Ok(Some(serde_json::from_slice(line)?))
}

/// How many bytes a line may take, newline included, plus one to tell an
/// oversized line from one that fits exactly.
const READ_LIMIT: u64 = MAX_MESSAGE as u64 + 2;

/// Reads one message (async end: the daemon).
pub async fn read<T: DeserializeOwned, R: AsyncBufRead + Unpin>(
    reader: &mut R,
) -> Result<Option<T>, CodecError> {
    let mut line = Vec::new();
    reader.take(READ_LIMIT).read_until(b'\n', &mut line).await?;
    decode(&line)
}

/// Writes one message and flushes (async end).
pub async fn write<T: Serialize, W: AsyncWrite + Unpin>(
    writer: &mut W,
    message: &T,
) -> Result<(), CodecError> {
    writer.write_all(&encode(message)?).await?;
    writer.flush().await?;
    Ok(())
}

/// Reads one message (blocking end: the CLI).
pub fn read_blocking<T: DeserializeOwned, R: BufRead>(
    reader: &mut R,
) -> Result<Option<T>, CodecError> {
    let mut line = Vec::new();
    reader.take(READ_LIMIT).read_until(b'\n', &mut line)?;
    decode(&line)
}

/// Writes one message (blocking end).
pub fn write_blocking<T: Serialize, W: Write>(
    writer: &mut W,
    message: &T,
) -> Result<(), CodecError> {
    writer.write_all(&encode(message)?)?;
    writer.flush()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_bounds() {
        let bytes = encode(&vec![1, 2, 3]).expect("valid");
        let mut reader = std::io::Cursor::new(bytes);
        assert_eq!(
            read_blocking::<Vec<u32>, _>(&mut reader).expect("valid"),
            Some(vec![1, 2, 3])
        );
        assert!(
            read_blocking::<Vec<u32>, _>(&mut reader)
                .expect("valid")
                .is_none()
        );
        let huge = "x".repeat(MAX_MESSAGE);
        assert!(matches!(encode(&huge), Err(CodecError::TooLarge)));
        let mut oversized = std::io::Cursor::new(vec![b'1'; MAX_MESSAGE + 10]);
        assert!(matches!(
            read_blocking::<u64, _>(&mut oversized),
            Err(CodecError::TooLarge)
        ));
    }
}
