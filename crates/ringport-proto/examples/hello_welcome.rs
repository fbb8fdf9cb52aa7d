//! A client's view of the handshake, without a socket: encode HELLO, then
//! decode a WELCOME that arrives in two TCP reads.
//!
//! Run: `cargo run -p ringport-proto --example hello_welcome`

use bytes::BytesMut;
use ringport_proto::{Decoder, Frame, Hello};

fn main() -> Result<(), ringport_proto::Error> {
    let hello = Frame::Hello(Hello {
        token: "eyJhbGciOi...".into(),
        client_info: "example/0.1".into(),
        resume: None,
    });
    let mut out = Vec::new();
    hello.encode(&mut out)?;
    println!("HELLO on the wire ({} bytes): {:02x?}", out.len(), out);

    // A WELCOME as the server would send it (see docs/protocol.md, 4.2).
    let welcome: [u8; 42] = [
        0x01, 0x02, 0x00, 0x00, 0x00, 0x00, 0x00, 0x22, // header: v1, WELCOME, len 34
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x07, // session id 7
        0x00, 0x00, 0x00, 0x01, // epoch 1
        0x00, 0x00, 0x75, 0x30, // heartbeat 30 000 ms
        0x00, 0x04, 0x93, 0xe0, // max sleep 300 000 ms
        0x00, 0x01, 0x00, 0x00, // max payload 65 536
        0x00, 0x40, // max rooms 64
        0x00, 0x00, 0x01, 0x8b, 0xcf, 0xe5, 0x68, 0x00, // server time
    ];
    let decoder = Decoder::default();
    let mut rx = BytesMut::new();
    for read in [&welcome[..5], &welcome[5..]] {
        rx.extend_from_slice(read);
        match decoder.decode(&mut rx)? {
            None => println!("{} bytes buffered, waiting for more", rx.len()),
            Some(Frame::Welcome(w)) => {
                println!(
                    "welcome: session {} heartbeat every {} ms",
                    w.session_id, w.heartbeat_interval_ms
                );
            }
            Some(other) => println!("unexpected {:?}", other.op()),
        }
    }
    Ok(())
}
