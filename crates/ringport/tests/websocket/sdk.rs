//! The Rust SDK over WebSocket (`ws://` address) against the real gateway: join, publish,
//! receive, and a reconnect that resumes the room.

use ringport_client::{Client, Event, Fault};
use ringport_proto::Status;

use crate::common::gateway::{test_config, TestServer, WAIT};
use crate::common::sdk_options;

/// The next event matching `want`, skipping others.
async fn until(
    rx: &mut tokio::sync::mpsc::Receiver<Event>,
    want: impl Fn(&Event) -> bool,
) -> Event {
    tokio::time::timeout(WAIT, async {
        loop {
            let ev = rx.recv().await.expect("client running");
            if want(&ev) {
                return ev;
            }
        }
    })
    .await
    .expect("event in time")
}

fn payload_is(ev: &Event, body: &[u8]) -> bool {
    matches!(ev, Event::Message(m) if &m.payload[..] == body)
}

#[test]
fn sdk_connects_over_websocket_and_resumes() {
    let server = TestServer::start(test_config());
    let mut native = server.welcomed("");
    assert_eq!(native.join(1, "sdk"), Status::OK);
    let url = format!("ws://{}/ringport", server.addr);
    let rt = crate::common::runtime();
    rt.block_on(async {
        let (client, mut rx) = Client::connect(url, "", sdk_options())
            .await
            .expect("connects");
        client.join("sdk").await.expect("joined");
        client.publish("sdk", "from sdk").await.expect("acked");
        until(&mut rx, |e| payload_is(e, b"from sdk")).await;

        native.publish("sdk", 1, b"from native");
        until(&mut rx, |e| payload_is(e, b"from native")).await;

        // The connection drops; the SDK reconnects over WebSocket and resumes the room.
        client.inject_fault(Fault::Abort).await;
        until(&mut rx, |e| matches!(e, Event::Disconnected { .. })).await;
        native.publish("sdk", 2, b"while away");
        let connected = until(&mut rx, |e| matches!(e, Event::Connected { .. })).await;
        assert!(matches!(connected, Event::Connected { resumed: true, .. }));
        until(&mut rx, |e| payload_is(e, b"while away")).await;
        client.close().await;
    });
    let body = server.http("GET", "/metrics", "").body;
    assert!(crate::common::gateway::metric(&body, "ringport_websocket_upgrades_total") >= 2);
}
