//! Placeholder: the ringport-bench tool (see issue 6).
fn main() {}
