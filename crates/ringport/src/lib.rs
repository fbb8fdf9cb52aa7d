//! ringport gateway library.
#![forbid(unsafe_code)]
