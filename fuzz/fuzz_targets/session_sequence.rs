//! Arbitrary sequences of client frames, raw bytes, clock steps and gateway
//! decisions through the server session machine; checks its invariants.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    ringport_proto::fuzzing::session_sequence(data);
});
