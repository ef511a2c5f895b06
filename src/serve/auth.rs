//! Who may do what: the token (read from a private file, compared in
//! constant time), and the Host/Origin check that blocks DNS rebinding.
//! Pure but `load_token`.

use std::net::SocketAddr;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TokenError {
    #[error("cannot read the token file {path}: {error}")]
    Read { path: PathBuf, error: String },
    #[error("the token file {path} is readable by {who} (mode {mode:o})\n  help: chmod 600 {path}")]
    Exposed {
        path: PathBuf,
        who: &'static str,
        mode: u32,
    },
    #[error(
        "the token file {path} is empty\n  help: put a long random token in it: head -c 32 /dev/urandom | base64 > {path}"
    )]
    Empty { path: PathBuf },
}

/// The token: the file's content less one trailing newline. A file that
/// group or others may read is refused: the token would not be secret.
pub fn load_token(path: &Path) -> Result<String, TokenError> {
    let read = |error: std::io::Error| TokenError::Read {
        path: path.to_owned(),
        error: error.to_string(),
    };
    let meta = std::fs::metadata(path).map_err(read)?;
    let mode = meta.mode() & 0o7777;
    if mode & 0o077 != 0 {
        return Err(TokenError::Exposed {
            path: path.to_owned(),
            who: if mode & 0o007 != 0 {
                "others"
            } else {
                "its group"
            },
            mode,
        });
    }
    let text = std::fs::read_to_string(path).map_err(read)?;
    let token = text
        .strip_suffix("\r\n")
        .or_else(|| text.strip_suffix('\n'))
        .unwrap_or(&text);
    if token.is_empty() {
        return Err(TokenError::Empty {
            path: path.to_owned(),
        });
    }
    Ok(token.to_owned())
}

/// True when `given` equals `token`, in a time that depends only on the
/// token's length (every byte is compared, whatever differs first).
pub fn same_token(token: &str, given: &str) -> bool {
    let (a, b) = (token.as_bytes(), given.as_bytes());
    let mut diff = u8::from(a.len() != b.len());
    for (i, x) in a.iter().enumerate() {
        diff |= x ^ b.get(i).copied().unwrap_or(!x);
    }
    diff == 0
}

/// The token of an `Authorization: Bearer TOKEN` header value.
pub fn bearer(header: &str) -> Option<&str> {
    let (scheme, token) = header.trim().split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

/// True when a `Host` header (`name[:port]`) names the listen address or
/// localhost: a page of another site that rebound its name to 127.0.0.1
/// still sends its own name, and is refused.
pub fn host_allowed(host: &str, listen: SocketAddr) -> bool {
    let host = host.trim().to_ascii_lowercase();
    let (name, port) = split_port(&host);
    if port.is_some_and(|p| p != listen.port()) {
        return false;
    }
    let name = name.trim_start_matches('[').trim_end_matches(']');
    if matches!(name, "localhost" | "127.0.0.1" | "::1") {
        return true;
    }
    name.parse::<std::net::IpAddr>()
        .is_ok_and(|ip| ip == listen.ip())
}

/// True when an `Origin` header (`scheme://host[:port]`) is this server's.
pub fn origin_allowed(origin: &str, listen: SocketAddr) -> bool {
    let Some((scheme, rest)) = origin.trim().split_once("://") else {
        return false;
    };
    matches!(scheme, "http" | "https") && !rest.contains('/') && host_allowed(rest, listen)
}

/// `name` and `port` of `name:port`, `[v6]:port`, `name` or `[v6]`.
fn split_port(host: &str) -> (&str, Option<u16>) {
    if let Some(end) = host.find(']') {
        let (name, rest) = host.split_at(end + 1);
        return (name, rest.strip_prefix(':').and_then(|p| p.parse().ok()));
    }
    match host.rsplit_once(':') {
        // `a:b:c` without brackets is a bare IPv6 address, no port.
        Some((name, port)) if !name.contains(':') => (name, Some(port.parse().unwrap_or(0))),
        _ => (host, None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn listen() -> SocketAddr {
        "127.0.0.1:9615".parse().expect("addr")
    }

    #[test]
    fn tokens_compare_whole() {
        assert!(same_token("secret", "secret"));
        assert!(!same_token("secret", "secreT"));
        assert!(!same_token("secret", "secret2"));
        assert!(!same_token("secret", "secre"));
        assert!(!same_token("secret", ""));
        assert_eq!(bearer("Bearer abc"), Some("abc"));
        assert_eq!(bearer("bearer  abc "), Some("abc"));
        assert_eq!(bearer("Basic abc"), None);
        assert_eq!(bearer("Bearer"), None);
    }

    #[test]
    fn hosts_and_origins() {
        assert!(host_allowed("127.0.0.1:9615", listen()));
        assert!(host_allowed("localhost:9615", listen()));
        assert!(host_allowed("localhost", listen()));
        assert!(host_allowed("[::1]:9615", listen()));
        assert!(!host_allowed("evil.example:9615", listen()));
        assert!(!host_allowed("localhost:80", listen()));
        assert!(!host_allowed("localhost:x", listen()));
        assert!(!host_allowed("127.0.0.1.evil.example", listen()));
        let lan: SocketAddr = "10.1.2.3:9615".parse().expect("addr");
        assert!(host_allowed("10.1.2.3:9615", lan));
        assert!(!host_allowed("10.1.2.4:9615", lan));
        assert!(origin_allowed("http://localhost:9615", listen()));
        assert!(!origin_allowed("http://evil.example:9615", listen()));
        assert!(!origin_allowed("null", listen()));
        assert!(!origin_allowed("http://localhost:9615/x", listen()));
    }

    #[test]
    fn token_files() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("token");
        std::fs::write(&path, "s3cret\n").expect("write");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).expect("chmod");
        assert_eq!(load_token(&path), Ok("s3cret".to_owned()));
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o640)).expect("chmod");
        assert!(matches!(load_token(&path), Err(TokenError::Exposed { .. })));
        std::fs::write(&path, "\n").expect("write");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).expect("chmod");
        assert!(matches!(load_token(&path), Err(TokenError::Empty { .. })));
    }
}
