//! Arbitrary bytes through the incremental decoder: one-shot, split and
//! byte-by-byte decoding must agree, nothing may panic, and every decoded
//! frame must re-encode to itself.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    ringport_proto::fuzzing::decode_frames(data);
});
