//! Arbitrary bytes through the WebSocket frame decoder (server and client roles) and the
//! upgrade request/response parsers: nothing may panic, and one-shot, split and
//! byte-by-byte decoding must agree.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    ringport_ws::fuzzing::decode(data);
});
