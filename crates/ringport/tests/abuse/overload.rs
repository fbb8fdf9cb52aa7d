//! Overload (issue 10, item 7): `server.memory_budget_bytes` bounds what the gateway holds
//! for clients (send queues, receive buffers, history).

use std::net::IpAddr;
use std::time::{Duration, Instant};

use ringport_proto::{CloseReason, Frame};

use super::admission::welcome_eventually;
use super::{push_room, pushes_then_close, wait_limit_hits};
use crate::common::gateway::{push_at_readers_pace, test_config, TestServer, WAIT};

/// A consumer that stops reading grows its send queue up to `engine.send_high_water`; many of
/// them would exhaust memory long before that. Over the budget the largest queue goes first,
/// while a client that reads gets every message. The one shed is told why: its queued pushes
/// are dropped (at a frame boundary), and what it reads next — whole frames the kernel
/// already held, then a CLOSE POLICY naming the budget — ends its stream.
#[test]
fn over_the_budget_the_largest_send_queue_is_closed_first() {
    let mut config = test_config();
    config.server.memory_budget_bytes = 4 << 20;
    config.engine.send_high_water = 256 << 20;
    // The slow consumer reads only after the reader is done: a loaded machine must not cut
    // its CLOSE off by the linger (the linger itself is tested below).
    config.engine.close_linger_ms = 60_000;
    config.history.max_messages_per_stream = 1;
    let server = TestServer::start(config);
    let mut slow = server.client();
    socket2::SockRef::from(&slow.stream)
        .set_recv_buffer_size(4096)
        .unwrap();
    slow.welcome("");
    slow.join(1, "feed");
    let mut reader = server.client();
    reader.welcome("");
    reader.join(1, "feed");
    const N: usize = 200;
    // The pushes follow the reader (at most LEAD ahead of what it has read), so its queue
    // never becomes the largest, however slowly a loaded machine runs its thread.
    const LEAD: usize = 4;
    let payload = "x".repeat(60_000);
    let mut reader = push_at_readers_pace(
        N,
        LEAD,
        reader,
        |r, _| {
            r.push();
        },
        || push_room(&server, "feed", &payload),
    );
    // 200 × 60 KB = 12 MB for the consumer that does not read: over the 4 MiB budget.
    wait_limit_hits(&server, "memory_budget", 1);
    // The slow consumer was the one closed (its queue dropped at once; what the kernel
    // already buffered for it still trickles out): the reader is still active.
    server.wait_metric("ringport_connections_open{state=\"active\"} 1");
    reader.send(&Frame::Ping { nonce: 9 });
    assert_eq!(
        reader.recv(),
        Frame::Pong { nonce: 9 },
        "the reader is the one kept"
    );
    // The slow consumer gets whole pushes (what the kernel held), then CLOSE with a reason.
    let (reason, text, pushes) = pushes_then_close(&mut slow);
    assert_eq!(reason, CloseReason::POLICY, "{text}");
    assert!(text.contains("memory budget"), "{text}");
    assert!(
        pushes < N,
        "its queued pushes were dropped: {pushes} of {N} arrived"
    );
    drop((reader, slow));
    // Load shed: new clients are served again (once the shards have published their
    // memory since).
    welcome_eventually(&server, IpAddr::from([127, 0, 0, 1]), "", "overloaded");
}

/// Above the budget new connections are refused with POLICY. Here the history alone is over
/// a one-byte budget, so the gateway stays overloaded.
#[test]
fn over_the_budget_new_connections_get_server_overloaded() {
    let mut config = test_config();
    config.server.memory_budget_bytes = 1;
    let server = TestServer::start(config);
    push_room(&server, "r", "some history");
    let deadline = Instant::now() + WAIT;
    loop {
        let mut c = server.client();
        match c.hello("") {
            Frame::Welcome(_) => {}
            Frame::Close { reason, text } => {
                assert_eq!(reason, CloseReason::POLICY, "{text}");
                assert!(text.contains("overloaded"), "{text}");
                break;
            }
            other => panic!("unexpected {other:?}"),
        }
        assert!(Instant::now() < deadline, "never refused");
        std::thread::sleep(Duration::from_millis(20));
    }
    wait_limit_hits(&server, "memory_budget", 1);
}
