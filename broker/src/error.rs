//! The one error type of `runnel-broker`, for the server and the client.

use runnel_log::LogError;

#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: String,
        #[source]
        source: std::io::Error,
    },

    #[error(
        "cannot connect to the broker at {addr}: {source}. Is `runnel broker` (or Kafka) running there?"
    )]
    Connect {
        addr: String,
        #[source]
        source: std::io::Error,
    },

    #[error("connection to {addr} failed: {source}")]
    Io {
        addr: String,
        #[source]
        source: std::io::Error,
    },

    /// Bytes that do not follow Kafka's protocol; the connection they came on is closed.
    #[error("malformed request or response: {0}")]
    Malformed(String),

    /// The peer answered a request with a Kafka error code.
    #[error("{api} failed with Kafka error {code} ({name}){context}")]
    Kafka {
        api: &'static str,
        code: i16,
        name: &'static str,
        context: String,
    },

    #[error("the broker does not support {api} at any version this client speaks")]
    Unsupported { api: &'static str },

    /// A security file (users, ACLs) that cannot be read or is not valid.
    #[error("security file {}: {reason}", path.display())]
    Security {
        path: std::path::PathBuf,
        reason: String,
    },

    /// TLS set-up or handshake: a certificate, key or CA file, or the peer.
    #[error("TLS: {0}")]
    Tls(String),

    /// Client security properties that are missing or wrong.
    #[error("{0}")]
    Config(String),

    /// The broker refused the SASL credentials, or the exchange failed.
    #[error("SASL authentication with {addr} failed: {reason}")]
    Authentication { addr: String, reason: String },

    #[error(transparent)]
    Log(#[from] LogError),
}

impl From<BrokerError> for LogError {
    /// The log traits speak `LogError`; remote failures travel as `LogError::Remote` with the
    /// broker's message kept whole.
    fn from(e: BrokerError) -> Self {
        match e {
            BrokerError::Log(e) => e,
            other => LogError::Remote(other.to_string()),
        }
    }
}
