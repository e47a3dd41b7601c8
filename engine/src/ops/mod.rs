//! Operators, one kind per file: stateless transformations, sinks, aggregations, windows, joins
//! and user processors.

pub(crate) mod aggregate;
pub(crate) mod join;
pub(crate) mod processor;
pub(crate) mod session;
pub(crate) mod sink;
pub(crate) mod stateless;
pub(crate) mod window;
