//! Urgent messages never overtake their own stream (docs/protocol.md 4.8, 8): the gateway and
//! the Rust SDK end to end, across a reconnect.
//!
//! An urgent room push goes out at once, but first the same stream's messages still waiting
//! for that connection — batched (`rooms.batch_window_ms`) or held for a sleeping client —
//! leave in offset order. So a client that tracks the highest offset per stream and drops
//! lower ones as duplicates loses nothing, and reports nothing lost that arrived.

mod common;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::gateway::{test_config, TestServer};
use common::{request, runtime};
use ringport::config::Config;
use ringport_client::{Client, Event, Fault, Options, StreamName};
use tokio::sync::mpsc::Receiver;

const ROOM: &str = "alerts";

/// What the application saw of `room:alerts`, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Seen {
    /// A message: offset, urgent flag.
    Message(u64, bool),
    /// A `NotRecovered` event: the lost range.
    Lost(std::ops::Range<u64>),
}

fn record(mut rx: Receiver<Event>) -> Arc<Mutex<Vec<Seen>>> {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let out = seen.clone();
    tokio::spawn(async move {
        let room = StreamName::Room(ROOM.into());
        while let Some(ev) = rx.recv().await {
            let s = match ev {
                Event::Message(m) if m.stream == room => Seen::Message(m.offset, m.urgent),
                Event::NotRecovered {
                    stream, missing, ..
                } if stream == room => Seen::Lost(missing),
                _ => continue,
            };
            out.lock().unwrap().push(s);
        }
    });
    seen
}

/// Pushes and waits until the shards handed the message to (or held it for) the member:
/// answered only once sequenced, a push could still be on its way to the shard when the
/// test's next step (a WAKE) arrives there, and then it is live traffic, not held.
async fn push(admin: SocketAddr, body: &'static str, urgent: bool) {
    tokio::task::spawn_blocking(move || {
        let r = request(
            admin,
            "POST",
            &format!("/v1/push/room/{ROOM}?wait=delivered"),
            &[],
            &format!(r#"{{"payload":"{body}","urgent":{urgent}}}"#),
        );
        assert_eq!(r.status, 200, "{}", r.body);
    })
    .await
    .unwrap();
}

/// Waits (bounded) until message `offset` was seen.
async fn wait_for(seen: &Mutex<Vec<Seen>>, offset: u64) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !seen
        .lock()
        .unwrap()
        .iter()
        .any(|s| matches!(s, Seen::Message(o, _) if *o == offset))
    {
        assert!(
            Instant::now() < deadline,
            "offset {offset} never arrived; saw {:?}",
            seen.lock().unwrap()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn options() -> Options {
    Options {
        handshake_timeout: Duration::from_secs(5),
        ..Options::default()
    }
}

/// Starts a gateway with `config` and runs `test` with an SDK client joined to the room, what
/// it saw of the room, and the admin address.
fn with_member<T, F>(config: Config, test: T)
where
    T: FnOnce(Client, Arc<Mutex<Vec<Seen>>>, SocketAddr) -> F,
    F: std::future::Future<Output = ()>,
{
    let server = TestServer::start(config);
    let (addr, admin) = (server.addr.to_string(), server.admin_addr);
    runtime().block_on(async move {
        let (c, rx) = Client::connect(addr, "", options()).await.unwrap();
        c.join(ROOM).await.unwrap();
        let seen = record(rx);
        test(c, seen, admin).await;
    });
}

fn messages(offsets: &[(u64, bool)]) -> Vec<Seen> {
    offsets.iter().map(|&(o, u)| Seen::Message(o, u)).collect()
}

/// Batched room messages 1, 2 and an urgent 3 inside the batch window: the member gets 1, 2, 3
/// in order (the urgent push flushes its stream's batch), no loss is reported, and after a
/// reconnect the stream continues at 4.
#[test]
fn urgent_flushes_its_streams_batch_first() {
    let mut config = test_config();
    // The longest window allowed: the urgent push lands while 1 and 2 wait.
    config.rooms.batch_window_ms = 1_000;
    with_member(config, |c, seen, admin| async move {
        push(admin, "one", false).await;
        push(admin, "two", false).await;
        push(admin, "three", true).await;
        wait_for(&seen, 3).await;
        c.inject_fault(Fault::Abort).await;
        push(admin, "four", false).await;
        wait_for(&seen, 4).await;
        assert_eq!(
            *seen.lock().unwrap(),
            messages(&[(1, false), (2, false), (3, true), (4, false)])
        );
        c.close().await;
    });
}

/// Held 1..3 while asleep, urgent 4: the client gets 1, 2, 3, 4 at once, in order; then the
/// connection is lost and the SDK resumes at 4 — nothing lost, nothing reported lost.
#[test]
fn urgent_sends_held_messages_of_its_stream_first_and_resume_loses_nothing() {
    with_member(test_config(), |c, seen, admin| async move {
        c.sleep(Duration::from_secs(60)).await.unwrap();
        for body in ["one", "two", "three"] {
            push(admin, body, false).await;
        }
        push(admin, "four", true).await;
        wait_for(&seen, 4).await;
        // Lost while still asleep: the resume reports offset 4 as the last received.
        c.inject_fault(Fault::Abort).await;
        push(admin, "five", false).await;
        wait_for(&seen, 5).await;
        assert_eq!(
            *seen.lock().unwrap(),
            messages(&[(1, false), (2, false), (3, false), (4, true), (5, false)])
        );
        c.close().await;
    });
}

/// Past the holdback the stream skips; an urgent message then ends that skipped run. The
/// client is told about every skipped offset exactly once, receives every other offset in
/// order, and the WAKE_ACK does not report again what it already knows.
#[test]
fn urgent_on_a_skipping_stream_reports_each_skipped_offset_once() {
    let mut config = test_config();
    config.protocol.sleep_holdback = 2;
    with_member(config, |c, seen, admin| async move {
        c.sleep(Duration::from_secs(60)).await.unwrap();
        // 1, 2 held; 3, 4 skipped; urgent 5 sends 1, 2 and ends the skipped run; 6, 7 held
        // again (the urgent push emptied the holdback); 8 skipped.
        for body in ["1", "2", "3", "4"] {
            push(admin, body, false).await;
        }
        push(admin, "5", true).await;
        wait_for(&seen, 5).await;
        push(admin, "6", false).await;
        push(admin, "7", false).await;
        push(admin, "8", false).await;
        let skipped = c.wake().await.unwrap();
        push(admin, "9", false).await;
        wait_for(&seen, 9).await;
        let got = seen.lock().unwrap().clone();
        assert_eq!(
            got,
            [
                Seen::Message(1, false),
                Seen::Message(2, false),
                Seen::Lost(3..5),
                Seen::Message(5, true),
                Seen::Lost(8..9),
                Seen::Message(6, false),
                Seen::Message(7, false),
                Seen::Message(9, false),
            ],
            "WAKE_ACK said {skipped:?}"
        );
        c.close().await;
    });
}
