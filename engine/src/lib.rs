//! `runnel-engine`: Kafka Streams in Rust, over Runnel's log.
//!
//! Build a [`Topology`] with the typed DSL ([`StreamsBuilder`], [`KStream`], [`KTable`]) or the
//! [`Processor`] API, run it with [`App`] against any [`runnel_log::LogClient`] (the embedded
//! log, or a broker), and test it with [`TestDriver`] (feature `test-util`). See the module docs of [`runtime`] for
//! the processing guarantee and [`task`] for event time and watermarks.

#![forbid(unsafe_code)]

pub(crate) mod assign;
pub(crate) mod checkpoint;
#[cfg(feature = "test-util")]
pub mod driver;
pub mod dsl;
pub mod error;
pub(crate) mod instance;
pub mod operator;
pub(crate) mod ops;
pub(crate) mod out_buf;
pub mod query;
pub mod record;
pub mod runtime;
pub mod serdes;
pub(crate) mod standby;
pub mod state;
pub mod stats;
pub mod task;
pub mod topology;

#[cfg(feature = "test-util")]
pub use driver::TestDriver;
pub use dsl::{
    Consumed, Grouped, JoinWindows, KGroupedStream, KStream, KTable, Produced,
    SessionWindowedKStream, SessionWindows, StreamsBuilder, TimeWindowedKStream, TimeWindows,
};
pub use error::{EngineError, Result};
pub use operator::TaskMetrics;
pub use ops::join::JoinKind;
pub use ops::processor::{Processor, ProcessorContext, PunctuationType, RecordMetadata};
pub use ops::window::EmitStrategy;
pub use record::{Rec, Window, Windowed};
pub use runtime::{App, ProcessingGuarantee, RunSummary, StreamsConfig};
pub use task::OnDeserializeError;
pub use topology::Topology;

/// Everything a topology needs, in one import.
pub mod prelude {
    pub use crate::serdes::{
        BytesSerde, DefaultSerde, F64Serde, I32Serde, I64Serde, JsonSerde, OptionSerde, Serde,
        StringSerde, U64Serde, UnitSerde, WindowedSerde, json,
    };
    pub use crate::state::{KeyValueStore, SessionStore, WindowStore};
    pub use crate::*;
}
