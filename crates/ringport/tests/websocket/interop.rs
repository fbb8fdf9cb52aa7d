//! Interop with an independent client: Python's `websockets` (`interop.py`). `.ci/run`
//! installs it; a machine without it fails this test rather than skipping it.

use std::process::Command;

use bytes::BytesMut;
use ringport_proto::{Frame, Hello, Publish, RoomRequest};

use crate::common::gateway::{test_config, TestServer};

fn hex(f: &Frame) -> String {
    let mut b = BytesMut::new();
    f.encode(&mut b).unwrap();
    b.iter().map(|x| format!("{x:02x}")).collect()
}

#[test]
fn python_websockets_client_interoperates() {
    let has_module = Command::new("python3")
        .args(["-c", "import websockets"])
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        has_module,
        "python3 with the `websockets` package is required (pip install websockets, or apt \
         install python3-websockets; .ci/run installs it)"
    );
    let server = TestServer::start(test_config());
    let mut native = server.welcomed("");
    assert_eq!(native.join(1, "interop"), ringport_proto::Status::OK);

    let hello = hex(&Frame::Hello(Hello {
        token: bytes::Bytes::new(),
        client_info: "python-websockets".into(),
        resume: None,
    }));
    let join = hex(&Frame::Join(RoomRequest {
        req_id: 5,
        room: "interop".into(),
    }));
    let publish = hex(&Frame::Publish(Publish {
        room: "interop".into(),
        seq: 1,
        payload: "hello from python".into(),
    }));
    let max = (test_config().protocol.max_payload + 8).to_string();
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/websocket/interop.py");
    let out = Command::new("python3")
        .args([
            script,
            &server.addr.port().to_string(),
            &hello,
            &join,
            &publish,
            &max,
        ])
        .output()
        .expect("python3 runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "interop.py failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let line = |key: &str| -> String {
        stdout
            .lines()
            .find_map(|l| l.strip_prefix(key).and_then(|v| v.strip_prefix(' ')))
            .unwrap_or_else(|| panic!("no {key} line in:\n{stdout}"))
            .to_owned()
    };
    assert_eq!(line("subprotocol"), "ringport.v1");
    let frame = |h: String| -> Frame {
        let bytes: Vec<u8> = (0..h.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&h[i..i + 2], 16).unwrap())
            .collect();
        let mut buf = BytesMut::from(&bytes[..]);
        let f = ringport_proto::Decoder::default()
            .decode(&mut buf)
            .unwrap()
            .unwrap();
        assert!(buf.is_empty(), "one frame per message");
        f
    };
    assert!(matches!(frame(line("welcome")), Frame::Welcome(_)));
    assert!(matches!(frame(line("room_result")), Frame::RoomResult(r) if r.req_id == 5));
    assert_eq!(line("pong"), "True");
    assert!(matches!(frame(line("publish_ack")), Frame::PublishAck(a) if a.seq == 1));
    assert_eq!(&native.push().payload[..], b"hello from python");
    assert_eq!(line("close"), "1000 ");
    assert_eq!(line("text_close"), "1003");
    assert_eq!(line("big_close"), "1009");
    assert_eq!(line("refused"), "400");
    assert_eq!(line("not_found"), "404");
}
