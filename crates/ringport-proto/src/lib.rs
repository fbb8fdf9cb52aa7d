//! ringport wire protocol, sans-IO.
#![forbid(unsafe_code)]
