//! Files: the [`FileSource`] (`file-source`, Kafka's `FileStreamSource`), which tails files
//! line by line through rotation, and the [`FileSink`] (`file-sink`, Kafka's
//! `FileStreamSink`), which appends records as lines and rotates. Both read and write the
//! `text`, `json` and `csv` formats; CSV goes through [`crate::csv`], so what the sink writes
//! the source (and the sink itself, on restart) reads back field for field.

mod json_line;
mod resume;
pub mod sink;
pub mod source;

pub use sink::FileSink;
pub use source::FileSource;

/// `format`: what a line is.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    /// The line's bytes as they are.
    #[default]
    Text,
    /// One JSON value per line.
    Json,
    /// RFC 4180 fields under a header line.
    Csv,
}
