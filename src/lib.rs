pub use runnel_engine as engine;
pub use runnel_log as log;
