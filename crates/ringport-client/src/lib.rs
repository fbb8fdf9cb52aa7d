//! ringport Rust client SDK.
#![forbid(unsafe_code)]
