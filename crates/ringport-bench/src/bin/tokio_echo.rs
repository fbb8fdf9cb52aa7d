//! Placeholder: in-repo tokio echo baseline.
fn main() {}
