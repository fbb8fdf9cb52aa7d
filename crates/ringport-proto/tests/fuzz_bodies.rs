//! Runs the cargo-fuzz target bodies on stable over proptest-generated inputs,
//! so `cargo test` exercises them too (CI also runs the real targets briefly).

use proptest::prelude::*;
use ringport_proto::fuzzing::{decode_frames, hello_resume, sample_frames, session_sequence};

/// Valid frames glued together, then mutated: reaches deeper than pure noise.
fn mutated_frames() -> impl Strategy<Value = Vec<u8>> {
    let samples: Vec<Vec<u8>> = sample_frames()
        .iter()
        .map(|f| f.to_bytes().unwrap().to_vec())
        .collect();
    (
        proptest::collection::vec(proptest::sample::select(samples), 0..6),
        proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..4),
    )
        .prop_map(|(frames, flips)| {
            let mut v: Vec<u8> = frames.concat();
            for (i, b) in flips {
                if !v.is_empty() {
                    let i = i.index(v.len());
                    v[i] = b;
                }
            }
            v
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2_000))]

    #[test]
    fn decode_frames_body_on_noise(data in proptest::collection::vec(any::<u8>(), 0..256)) {
        decode_frames(&data);
    }

    #[test]
    fn decode_frames_body_on_mutated_frames(data in mutated_frames()) {
        decode_frames(&data);
    }

    #[test]
    fn session_sequence_body(data in proptest::collection::vec(any::<u8>(), 0..256)) {
        session_sequence(&data);
    }

    #[test]
    fn hello_resume_body(data in proptest::collection::vec(any::<u8>(), 0..2048)) {
        hello_resume(&data);
    }
}

/// The input cargo-fuzz found in CI on dc9cad0 (`session_sequence`,
/// crash-638243b22a91fa87e632a35d165b73c2a81198d8), kept as a regression test.
#[test]
fn session_sequence_ci_crash_638243b2() {
    let data: &[u8] = &[
        0, 1, 1, 0, 129, 1, 0, 254, 0, 0, 0, 0, 0, 14, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
        0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 0, 74, 156, 10, 43, 220, 103, 180, 43, 180,
        43, 180, 180, 180, 230, 103, 180, 156, 43, 180, 180, 180, 50, 220, 103, 180, 129, 156, 43,
        1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 1, 1, 0, 74, 156, 10, 43, 220, 114, 48, 103, 180, 43,
        180, 43, 180, 180, 180, 230, 103, 180, 156, 43, 180, 180, 180, 50, 220, 103, 180, 129, 156,
        43, 1, 114, 50, 1, 1,
    ];
    session_sequence(data);
}
