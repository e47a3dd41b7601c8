//! The `runnel` facade: the crates, plus the ride-hailing reference data and jobs.

pub use runnel_broker as broker;
pub use runnel_connectors as connectors;
pub use runnel_engine as engine;
pub use runnel_log as log;
pub use runnel_sql as sql;

pub mod demo;
pub mod rides;
