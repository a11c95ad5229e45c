//! What can go wrong when talking to a Midas server.
//!
//! Messages never carry secrets: URLs are redacted (see [`super::redact`]) and reqwest errors are
//! stripped of their URL before they are kept as a source. This module depends on no other of
//! the client's: they all use it.

use std::time::Duration;

use super::codes;

/// An error from the Midas client. The filesystem layer maps these to errno values.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The server answered `stat: "fail"`. The message is the server's own, kept for the logs.
    #[error("{method}: Midas refused the call (code {code}): {message}")]
    Api {
        method: String,
        code: i64,
        message: String,
    },
    /// No byte arrived for `after` (or the whole call took longer than its cap).
    #[error("{method}: no answer from the server within {after:?}")]
    Timeout { method: String, after: Duration },
    /// The connection could not be made or broke before an answer arrived.
    #[error("cannot reach {url}: {}", error_chain(.source.as_ref()))]
    Unreachable {
        url: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// An HTTP status other than success (Midas itself only does this for PHP fatal errors and
    /// `/download` failures; proxies do it when the server is down).
    #[error("{method}: the server answered HTTP {status}")]
    Http { method: String, status: u16 },
    /// The answer was not a Midas JSON envelope: an HTML page, a PHP error, another kind of server.
    #[error("{url} did not answer like a Midas server: {detail}")]
    NotMidas { url: String, detail: String },
    /// A Midas envelope whose data does not have the shape this method returns.
    #[error("{method}: unexpected data in the answer: {detail}")]
    Decode { method: String, detail: String },
    /// An answer longer than the client reads (see [`super::client::MAX_ANSWER`]).
    #[error("{method}: the answer is longer than {limit} bytes, more than midasfs reads")]
    TooLarge { method: String, limit: usize },
    /// A download ended before all the bytes the caller expected had arrived.
    #[error("download ended after {got} of {expected} bytes")]
    ShortRead { expected: u64, got: u64 },
    /// The server URL given by the user is not usable.
    #[error("bad server URL: {0}")]
    BadUrl(String),
    /// The credentials were refused; the text says what to fix.
    #[error("authentication failed: {0}")]
    Auth(String),
    /// A local file could not be read (uploads).
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

impl Error {
    /// The Midas error code of an API failure (`-151`, `0`, …), if this is one.
    pub fn api_code(&self) -> Option<i64> {
        match self {
            Error::Api { code, .. } => Some(*code),
            _ => None,
        }
    }

    /// Whether a download found its bitstream gone: Midas's download controller answers a
    /// bitstream that no longer exists with HTTP 404 (every API error comes with HTTP 200).
    pub fn is_download_gone(&self) -> bool {
        matches!(self, Error::Http { method, status: 404 } if method == super::transfer::DOWNLOAD)
    }

    /// Whether trying again later may succeed: timeouts, broken or refused connections, 5xx
    /// answers and downloads cut short.
    pub fn is_transient(&self) -> bool {
        match self {
            Error::Timeout { .. } | Error::Unreachable { .. } | Error::ShortRead { .. } => true,
            Error::Http { status, .. } => *status >= 500,
            Error::Api { .. }
            | Error::NotMidas { .. }
            | Error::Decode { .. }
            | Error::TooLarge { .. }
            | Error::BadUrl(_)
            | Error::Auth(_)
            | Error::Io(_) => false,
        }
    }

    /// Midas's answer to an unknown or expired token (code −101 is also "unknown method",
    /// which must not trigger a new login).
    pub(crate) fn is_invalid_token(&self) -> bool {
        matches!(self, Error::Api { code: codes::INVALID_TOKEN, message, .. }
            if message == codes::INVALID_TOKEN_MESSAGE)
    }
}

/// An error and its causes on one line ("error sending request: connection refused").
pub(crate) fn error_chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn api(code: i64, message: &str) -> Error {
        Error::Api {
            method: "midas.folder.get".into(),
            code,
            message: message.into(),
        }
    }

    #[test]
    fn api_code_only_for_api_errors() {
        assert_eq!(api(-151, "x").api_code(), Some(-151));
        assert_eq!(Error::BadUrl("x".into()).api_code(), None);
    }

    #[test]
    fn transient_errors() {
        let timeout = Error::Timeout {
            method: "m".into(),
            after: Duration::from_secs(1),
        };
        assert!(timeout.is_transient());
        assert!(Error::Http {
            method: "m".into(),
            status: 503
        }
        .is_transient());
        assert!(!Error::Http {
            method: "m".into(),
            status: 404
        }
        .is_transient());
        assert!(!api(-100, "Create failed").is_transient());
        assert!(!Error::Auth("no".into()).is_transient());
    }

    #[test]
    fn only_the_invalid_token_message_means_log_in_again() {
        assert!(api(-101, "Invalid token").is_invalid_token());
        assert!(!api(
            -101,
            "Server error. Requested method midas.x does not exist."
        )
        .is_invalid_token());
        assert!(!api(-151, "Invalid token").is_invalid_token());
    }

    #[test]
    fn messages_keep_the_server_text() {
        let text = api(-151, "This folder doesn't exist").to_string();
        assert!(text.contains("This folder doesn't exist"), "{text}");
        assert!(text.contains("-151"), "{text}");
    }
}
