//! The io_uring backend: ring setup and feature probing, the provided-buffer ring, and the
//! operation builders.

mod bufring;
mod driver;

pub(crate) use driver::{SubmitFailures, UringDriver};
