//! Entry points for the cargo-fuzz targets in `fuzz/` (and a property test here): public so
//! the fuzz crate can call them, hidden from the docs.

use bytes::BytesMut;

use crate::{handshake, Decoder, Error, Incoming, Role};

/// What a decoder made of some input: data bytes per message, control items, the error.
#[derive(Debug, PartialEq, Eq, Default)]
struct Outcome {
    data: Vec<u8>,
    ends: usize,
    controls: Vec<Incoming>,
    error: Option<Error>,
}

fn run(role: Role, data: &[u8], chunk: usize) -> Outcome {
    let mut d = Decoder::new(role, 4096);
    let mut buf = BytesMut::new();
    let mut out = Outcome::default();
    for piece in data.chunks(chunk.max(1)) {
        buf.extend_from_slice(piece);
        loop {
            match d.next(&mut buf) {
                Ok(Some(Incoming::Data { payload, end })) => {
                    out.data.extend_from_slice(&payload);
                    out.ends += usize::from(end);
                }
                Ok(Some(other)) => out.controls.push(other),
                Ok(None) => break,
                Err(e) => {
                    out.error = Some(e);
                    return out;
                }
            }
        }
        // Never more held than an incomplete header or control frame.
        assert!(
            d.is_done() || buf.len() < 14 + 125,
            "decoder held {}",
            buf.len()
        );
    }
    out
}

/// Arbitrary bytes through the frame decoder (both roles) and the upgrade parser: nothing
/// panics, and one-shot, split and byte-by-byte decoding agree.
pub fn decode(data: &[u8]) {
    for role in [Role::Server, Role::Client] {
        let whole = run(role, data, data.len().max(1));
        let split = run(role, data, 7);
        let bytes = run(role, data, 1);
        assert_eq!(whole, split);
        assert_eq!(whole, bytes);
    }
    let cfg = handshake::ServerConfig {
        path: "/ringport",
        protocol: crate::SUBPROTOCOL,
        max_request: 1024,
    };
    if let Ok(Some(a)) = handshake::accept(data, &cfg) {
        assert!(a.consumed <= data.len());
    }
    let _ = handshake::check_response(data, "dGhlIHNhbXBsZSBub25jZQ==", crate::SUBPROTOCOL, 1024);
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn chunking_never_changes_the_outcome(data in proptest::collection::vec(any::<u8>(), 0..600)) {
            super::decode(&data);
        }

        /// Masked-looking input (second byte with the mask bit) reaches deeper states.
        #[test]
        fn masked_frames_decode_alike(
            mut data in proptest::collection::vec(any::<u8>(), 2..600),
            op in 0u8..16,
        ) {
            data[0] = (data[0] & 0x80) | op;
            data[1] = 0x80 | (data[1] % 126);
            super::decode(&data);
        }
    }
}
