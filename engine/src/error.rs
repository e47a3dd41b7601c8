//! The engine's one error type.

use runnel_log::LogError;

pub type Result<T, E = EngineError> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error(transparent)]
    Log(#[from] LogError),

    #[error("invalid topology: {0}")]
    Topology(String),

    #[error(
        "topics {topics} are read by the same task but have different partition counts ({counts}): \
         a join or merge needs co-partitioned inputs (same partition count, same key). \
         Create them with the same number of partitions, or re-key one side with `repartition()`"
    )]
    NotCoPartitioned { topics: String, counts: String },

    #[error(
        "cannot deserialize the {what} of {topic}-{partition} at offset {offset}: {reason}. \
         Set `deserialization_errors = log_and_continue` to send such records to the dead-letter topic"
    )]
    Deserialize {
        what: &'static str,
        topic: String,
        partition: u32,
        offset: u64,
        reason: String,
    },

    #[error("cannot serialize a record for {topic}: {reason}")]
    Serialize { topic: String, reason: String },

    #[error(
        "task {task} failed in operator {node:?} while processing {topic}-{partition} at offset {offset}: {message}"
    )]
    TaskFailed {
        task: String,
        node: String,
        topic: String,
        partition: u32,
        offset: u64,
        message: String,
    },

    #[error("state store {store:?}: {reason}")]
    Store { store: String, reason: String },

    #[error("I/O error on {path}: {source}")]
    Io {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// A job file or SQL error, already naming its place (`file:line:col: ...`).
    #[error("{0}")]
    Job(String),

    #[error("invalid configuration: {0}")]
    Config(String),

    /// An interactive query ([`crate::query`]) the application cannot answer now.
    #[error("{0}")]
    Query(QueryRefused),
}

/// Why an interactive query got no answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QueryRefused {
    #[error("the application is not running (no worker to ask)")]
    NotRunning,
    #[error("no task of the application has a store named {0:?}")]
    UnknownStore(String),
    #[error("store {0:?} is not an aggregation's: read it with a read function instead")]
    NotATable(String),
    #[error("no answer from {missing} of {asked} worker threads within {timeout:?}")]
    Timeout {
        missing: usize,
        asked: usize,
        timeout: std::time::Duration,
    },
}
