//! Reading `docs/protocol.md`'s machine-readable parts, for the tests that keep
//! the document and the code in agreement (`tests/spec_examples.rs` here, the
//! gateway's `tests/conformance.rs`).

/// The bytes of every ```` ```hex ```` block of `doc`, in order.
///
/// # Panics
///
/// On an unterminated block or a token that is not a hex byte (the document
/// is broken; the calling test should fail).
pub fn hex_examples(doc: &str) -> Vec<Vec<u8>> {
    let mut blocks = Vec::new();
    let mut rest = doc;
    while let Some(start) = rest.find("```hex\n") {
        let body = &rest[start + 7..];
        let end = body.find("```").expect("unterminated hex block");
        let bytes = body[..end]
            .split_whitespace()
            .map(|h| u8::from_str_radix(h, 16).expect("hex byte"))
            .collect();
        blocks.push(bytes);
        rest = &body[end + 3..];
    }
    blocks
}
