//! placeholder
pub struct RemoteLog;
