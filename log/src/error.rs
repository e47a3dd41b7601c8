//! The one error type of `runnel-log`.
//!
//! Every variant says what went wrong, where (topic, partition, file, offset) and, where there is
//! one, what the user can do about it. Bad input never panics: it ends up here.

use std::path::PathBuf;

/// Result alias used across the crate.
pub type Result<T, E = LogError> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum LogError {
    #[error("I/O error on {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error(
        "invalid topic name {name:?}: {reason}. Topic names use only ASCII letters, digits, '.', '_' and '-', are 1 to 249 characters long and are not '.' or '..'"
    )]
    InvalidTopicName { name: String, reason: String },

    #[error("topic {0:?} does not exist; create it with `runnel topics create {0}`")]
    UnknownTopic(String),

    #[error("topic {0:?} already exists")]
    TopicExists(String),

    #[error("topic {topic:?} has partitions 0 to {last}; partition {partition} does not exist", last = partitions.saturating_sub(1))]
    UnknownPartition {
        topic: String,
        partition: u32,
        partitions: u32,
    },

    #[error("invalid configuration: {0}")]
    InvalidConfig(String),

    #[error(
        "offset {offset} is out of range for {topic}-{partition}: valid offsets are {start}..{end}. Seek to the beginning or the end, or set auto.offset.reset"
    )]
    OffsetOutOfRange {
        topic: String,
        partition: u32,
        offset: u64,
        start: u64,
        end: u64,
    },

    #[error(
        "corrupt record batch in {topic}-{partition}, segment {segment}, at offset {offset} (file position {position}): {reason}. The data before this point is intact; restore the segment from a replica or backup, or delete it and everything after it"
    )]
    Corrupt {
        topic: String,
        partition: u32,
        segment: PathBuf,
        offset: u64,
        position: u64,
        reason: String,
    },

    /// A batch whose CRC matches (so its producer wrote it so) but whose records cannot be
    /// decoded, e.g. a compressed payload that does not decompress.
    #[error(
        "record batch of {topic}-{partition} at offset {offset} cannot be read: {reason}. Its CRC matches, so it was stored as its producer sent it; the records after it start at offset {next} (seek there to skip it)"
    )]
    UnreadableBatch {
        topic: String,
        partition: u32,
        offset: u64,
        next: u64,
        reason: String,
    },

    /// The disk refused an append (full, failing, or a failed sync): nothing from the failed
    /// write on was acknowledged, and the partition holds a gapless prefix of what was sent.
    #[error(
        "cannot store records in {topic}-{partition}: {reason}. Nothing from this write on was acknowledged and the partition has no gap; free space or fix the disk, then send the unacknowledged records again (appends resume without a restart)"
    )]
    Storage {
        topic: String,
        partition: u32,
        reason: String,
    },

    #[error("invalid record batch: {0}")]
    InvalidBatch(String),

    #[error("record too large: {size} bytes, the limit is {max} bytes (max.message.bytes)")]
    RecordTooLarge { size: usize, max: usize },

    #[error("malformed protocol data: {0}")]
    Protocol(String),

    /// A failure a remote log (the broker client) reported, with its message whole: it names
    /// the request, the Kafka error and what to do.
    #[error("{0}")]
    Remote(String),

    #[error(
        "data directory {path} is in use by another Runnel process; stop it first (one process owns a data directory)"
    )]
    DataDirLocked { path: PathBuf },

    #[error("consumer group {group:?}: {kind}")]
    Group { group: String, kind: GroupErrorKind },

    #[error(
        "no committed offset for group {group:?} on {topic}-{partition} and auto.offset.reset is none; commit an offset or use earliest/latest"
    )]
    NoOffset {
        group: String,
        topic: String,
        partition: u32,
    },

    #[error("records for {topic}-{partition} were not stored: {reason}")]
    Delivery {
        topic: String,
        partition: u32,
        reason: String,
    },

    #[error("the log is closed")]
    Closed,

    #[error("producer {producer_id} on {topic}-{partition}: {kind}")]
    Producer {
        topic: String,
        partition: u32,
        producer_id: i64,
        kind: ProducerErrorKind,
    },

    #[error("transactional id {transactional_id:?}: {kind}")]
    Transaction {
        transactional_id: String,
        kind: TxnErrorKind,
    },
}

/// Why a partition refused an idempotent or transactional producer's batch; the variants
/// mirror Kafka's error codes so the broker can map them one to one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProducerErrorKind {
    /// An older epoch than the partition has seen: another instance took over (fenced).
    InvalidProducerEpoch,
    /// A gap or an old sequence that is no longer remembered.
    OutOfOrderSequence,
}

impl std::fmt::Display for ProducerErrorKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::InvalidProducerEpoch => {
                "its epoch is older than the partition has seen: a newer instance of the producer took over (fenced); create a new producer"
            }
            Self::OutOfOrderSequence => {
                "out-of-order sequence number (a batch is missing before this one); reset the producer"
            }
        })
    }
}

/// Why the transaction coordinator refused a call; the variants mirror Kafka's error codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TxnErrorKind {
    /// Another producer with the same transactional id initialised since (a newer epoch).
    ProducerFenced,
    /// The producer id does not belong to this transactional id (or the id is unknown).
    InvalidProducerIdMapping,
    /// The call does not fit the transaction's state (commit after abort, end with none open).
    InvalidTxnState,
    /// A previous end of the transaction is still being completed; retry.
    ConcurrentTransactions,
    /// `transaction.timeout.ms` is out of range.
    InvalidTransactionTimeout,
    /// A partition refused a batch of the transaction, so committing it would lose that
    /// batch: it can only be aborted.
    TransactionAbortable,
}

impl std::fmt::Display for TxnErrorKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::ProducerFenced => {
                "fenced: another producer with this transactional id has initialised since (or the transaction timed out); close this producer"
            }
            Self::InvalidProducerIdMapping => {
                "the producer id is not the one this transactional id has; call init_transactions"
            }
            Self::InvalidTxnState => "the request does not fit the transaction's state",
            Self::ConcurrentTransactions => {
                "the previous transaction is still being completed; retry"
            }
            Self::InvalidTransactionTimeout => {
                "transaction.timeout.ms must be between 1 ms and 15 minutes"
            }
            Self::TransactionAbortable => {
                "a partition refused a batch of this transaction, so it cannot commit; abort it and run it again"
            }
        })
    }
}

/// Why a group call was refused; the variants mirror Kafka's group error codes so the broker
/// can map them one to one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GroupErrorKind {
    UnknownMember,
    IllegalGeneration,
    RebalanceInProgress,
    InconsistentProtocol,
}

impl std::fmt::Display for GroupErrorKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::UnknownMember => {
                "unknown member id (it left or its session expired); rejoin the group"
            }
            Self::IllegalGeneration => "stale generation (the group rebalanced); rejoin the group",
            Self::RebalanceInProgress => "a rebalance is in progress; rejoin the group",
            Self::InconsistentProtocol => "no assignment strategy is supported by every member",
        })
    }
}

impl LogError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Self::Io {
            path: path.into(),
            source,
        }
    }

    pub(crate) fn group(group: &str, kind: GroupErrorKind) -> Self {
        Self::Group {
            group: group.to_string(),
            kind,
        }
    }
}
