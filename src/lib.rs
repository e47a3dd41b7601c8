pub use runnel_log as log;
