//! ringport-io engine.
