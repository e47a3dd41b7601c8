//! Parquet: the [`ParquetSink`] (`parquet-sink`), JSON object records into Parquet files of a
//! declared schema, renamed into place once closed; only closed files' offsets are committed.

mod rows;
pub mod sink;

pub use sink::ParquetSink;
