//! The connectors' one error type.

use runnel_log::LogError;

pub type Result<T, E = ConnectError> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error(transparent)]
    Log(#[from] LogError),

    #[error("connector {connector:?}: {message}")]
    Config { connector: String, message: String },

    #[error("unknown connector.class {class:?}; known classes: {known}")]
    UnknownClass { class: String, known: String },

    #[error("{path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },

    #[error("{what}: {message}")]
    Record { what: String, message: String },

    /// A database error; `transient` ones (the server went away) are worth retrying, the others
    /// are about the data.
    #[error("database {what}: {message}")]
    Database {
        what: String,
        message: String,
        transient: bool,
    },

    #[error("connector {0:?} does not exist")]
    NotFound(String),

    #[error("connector {0:?} already exists")]
    Exists(String),

    #[error("connector {connector:?} has no task {task}")]
    TaskNotFound { connector: String, task: u32 },

    /// Offsets change only while their connector cannot move them (Kafka Connect's rule).
    #[error(
        "connector {0:?} must be STOPPED before its offsets can be changed: PUT /connectors/{0}/stop first"
    )]
    NotStopped(String),

    /// In a group of workers, a request that cannot reach the worker that serves it now: no
    /// leader or owner known yet, or still elsewhere after two hops (a rebalance under way).
    /// Kafka Connect's 409; the request can be sent again.
    #[error(
        "cannot complete the request momentarily ({0}), likely because the worker group is rebalancing: try again"
    )]
    Rebalancing(String),

    /// In a group of workers, the worker a request was forwarded to did not answer.
    #[error("could not forward the request to worker {worker}: {message}")]
    Forward { worker: String, message: String },

    #[error("worker file {path}: {message}")]
    WorkerFile { path: String, message: String },
}
