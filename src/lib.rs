pub use runnel_broker as broker;
pub use runnel_log as log;
