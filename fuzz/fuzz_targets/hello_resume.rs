//! A HELLO with resume entries: raw payload bytes and HELLOs built from the input (many
//! entries, duplicates, the broadcast stream, oversized ones) through the handshake decoder
//! and the server session; checks size limits and that every entry reaches the gateway.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    ringport_proto::fuzzing::hello_resume(data);
});
