//! Keeps the hex examples in `docs/protocol.md` true.
//!
//! Every ```hex block in the spec must decode to exactly one frame, and each
//! sample frame (one per op, plus a few more variants) must appear, byte for
//! byte, in the spec. Run with
//! `PRINT_SPEC_HEX=1 cargo test -p ringport-proto --test spec_examples -- --nocapture`
//! to print the blocks after a wire change.

use ringport_proto::fuzzing::sample_frames;
use ringport_proto::{Decoder, Frame, ResumeOutcome, ResumeResult, Status, StreamName};

const SPEC: &str = include_str!("../../../docs/protocol.md");

/// Formats bytes as the spec does: the 8 header bytes on the first line, then
/// the payload 16 bytes per line.
fn hex_block(b: &[u8]) -> String {
    let line = |c: &[u8]| {
        c.iter()
            .map(|x| format!("{x:02x}"))
            .collect::<Vec<_>>()
            .join(" ")
    };
    let mut out = vec![line(&b[..8])];
    out.extend(b[8..].chunks(16).map(line));
    out.join("\n")
}

/// One sample per op, then the variants the spec shows besides them.
fn examples() -> Vec<Frame> {
    let mut v = sample_frames();
    // RESUME_RESULT REFUSED (4.10).
    v.push(Frame::ResumeResult(ResumeResult {
        stream: StreamName::Room("vip".into()),
        outcome: ResumeOutcome::Refused(Status::FORBIDDEN),
        old_epoch: 1,
        new_epoch: 1,
        missing_from: 0,
        missing_to: 0,
    }));
    v
}

fn spec_blocks() -> Vec<Vec<u8>> {
    ringport_proto::spec::hex_examples(SPEC)
}

#[test]
fn every_hex_example_in_the_spec_decodes_to_one_frame() {
    let blocks = spec_blocks();
    assert!(blocks.len() >= 18, "spec has {} hex examples", blocks.len());
    for b in blocks {
        let (frame, used) = Decoder::default()
            .decode_slice(&b)
            .unwrap_or_else(|e| panic!("{e}: {b:02x?}"))
            .expect("complete frame");
        assert_eq!(used, b.len(), "{frame:?} has trailing bytes");
    }
}

#[test]
fn every_sample_frame_appears_in_the_spec() {
    let print = std::env::var_os("PRINT_SPEC_HEX").is_some();
    let mut missing = Vec::new();
    for f in examples() {
        let block = hex_block(&f.to_bytes().unwrap());
        if print {
            println!("### {:?}\n{f:#?}\n```hex\n{block}\n```\n", f.op());
        }
        if !SPEC.contains(&format!("```hex\n{block}\n```")) {
            missing.push(f.op());
        }
    }
    assert!(
        missing.is_empty(),
        "spec lacks hex examples for {missing:?}"
    );
}

#[test]
fn spec_examples_decode_to_the_sample_frames() {
    let decoded: Vec<Frame> = spec_blocks()
        .iter()
        .map(|b| Decoder::default().decode_slice(b).unwrap().unwrap().0)
        .collect();
    for f in examples() {
        assert!(
            decoded.contains(&f),
            "{:?} example decodes differently",
            f.op()
        );
    }
}
