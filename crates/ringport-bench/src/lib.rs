//! ringport-bench as a library: the measurement core, the echo transports and the report
//! writer, so integration tests can drive them without the command line.
#![forbid(unsafe_code)]

#[cfg(feature = "engine")]
pub mod attack;
pub mod baseline;
pub mod compare;
pub mod echo;
pub mod fonts;
#[cfg(feature = "engine")]
pub mod gateway;
pub mod measure;
pub mod pacer;
pub mod procfs;
pub mod report;
pub mod sources;
pub mod stats;
