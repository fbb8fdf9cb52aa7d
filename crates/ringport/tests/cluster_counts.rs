//! Counts cluster-wide (`--cluster`): `GET /v1/rooms/{room}`, `/v1/rooms/{room}/presence`
//! and `/v1/stats` sum every live node, with the nodes summed in `cluster`; a node that does
//! not answer within `cluster.query_timeout_ms` makes the answer `partial`, in bounded time,
//! never a silent undercount. `limits.max_connections_per_user` holds over all nodes.
//!
//! The nodes are `ringport serve` processes (one is SIGSTOPped) or in-process gateways on a
//! `nats-server` started on a free loopback port.

mod common;

use std::time::{Duration, Instant};

use common::cluster::{member, node_with, three_nodes, Broker, Node, NodeProcess};
use common::gateway::{metric, test_config, token, Client, TestServer, SECRET, WAIT};
use ringport_proto::{CloseReason, Frame};
use serde_json::Value;

fn get(n: &NodeProcess, path: &str) -> Value {
    let r = n.http("GET", path, "");
    assert_eq!(r.status, 200, "{path}: {}", r.body);
    serde_json::from_str(&r.body).unwrap()
}

/// Each node's count in an answer's `cluster.nodes`, by node id.
fn per_node(v: &Value) -> Vec<(String, u64)> {
    let mut nodes: Vec<(String, u64)> = v["cluster"]["nodes"]
        .as_array()
        .unwrap_or_else(|| panic!("no cluster.nodes in {v}"))
        .iter()
        .map(|n| {
            (
                n["node"].as_str().unwrap().to_owned(),
                n["online"].as_u64().unwrap(),
            )
        })
        .collect();
    nodes.sort();
    nodes
}

/// Every page of the room's presence through `n`, `limit` users a page.
fn presence_pages(n: &NodeProcess, room: &str, limit: usize) -> Vec<(String, u64)> {
    let mut users = Vec::new();
    let mut after: Option<String> = None;
    for _ in 0..20 {
        let path = match &after {
            Some(a) => format!("/v1/rooms/{room}/presence?limit={limit}&after={a}"),
            None => format!("/v1/rooms/{room}/presence?limit={limit}"),
        };
        let v = get(n, &path);
        assert_eq!(v["cluster"]["partial"], false, "{v}");
        for m in v["members"].as_array().unwrap() {
            users.push((
                m["user"].as_str().unwrap().to_owned(),
                m["connections"].as_u64().unwrap(),
            ));
        }
        match v["next"].as_str() {
            Some(next) => after = Some(next.to_owned()),
            None => return users,
        }
    }
    panic!("presence never ended: {users:?}");
}

#[test]
fn room_presence_and_stats_sum_every_node_and_say_partial_when_one_is_silent() {
    let (_broker, [a, b, c]) = three_nodes(&["--set", "cluster.query_timeout_ms=500"]);
    // Room "r": 2 members on a (u1, u2), 1 on b (u1 again), 3 on c (u3, u4, u5); one more
    // connection on c in another room.
    let spread = [
        (&a, "u1"),
        (&a, "u2"),
        (&b, "u1"),
        (&c, "u3"),
        (&c, "u4"),
        (&c, "u5"),
    ];
    let _members: Vec<Client> = spread.iter().map(|(n, u)| member(*n, u, "r")).collect();
    let _other = member(&c, "u6", "elsewhere");
    let want_nodes = vec![
        ("a".to_owned(), 2),
        ("b".to_owned(), 1),
        ("c".to_owned(), 3),
    ];

    for n in [&a, &b, &c] {
        let room = get(n, "/v1/rooms/r?sample=100");
        assert_eq!(room["online"], 6, "{room}");
        assert_eq!(room["members"].as_array().unwrap().len(), 6, "{room}");
        let scope = &room["cluster"];
        assert_eq!(scope["partial"], false, "{room}");
        assert_eq!(scope["nodes_expected"], 3, "{room}");
        assert_eq!(scope["nodes_answered"], 3, "{room}");
        assert_eq!(per_node(&room), want_nodes);

        let stats = get(n, "/v1/stats");
        assert_eq!(stats["connections"]["active"], 7, "{stats}");
        assert_eq!(stats["cluster"]["partial"], false, "{stats}");
        assert_eq!(
            per_node(&stats),
            vec![
                ("a".to_owned(), 2),
                ("b".to_owned(), 1),
                ("c".to_owned(), 4)
            ]
        );

        // Pages of two users: u1 has a connection on a and on b, counted together.
        assert_eq!(
            presence_pages(n, "r", 2),
            [("u1", 2), ("u2", 1), ("u3", 1), ("u4", 1), ("u5", 1)].map(|(u, k)| (u.to_owned(), k))
        );
    }

    // c stops answering (SIGSTOP): a answers within the timeout, without c's counts, and
    // says so. (c is still live for 3 s without heartbeats: the query comes well before.)
    c.stop();
    let started = Instant::now();
    let room = get(&a, "/v1/rooms/r");
    let took = started.elapsed();
    c.signal("-CONT");
    assert!(
        took >= Duration::from_millis(450) && took < Duration::from_secs(5),
        "answered in {took:?} (timeout 500 ms): {room}"
    );
    assert_eq!(room["online"], 3, "{room}");
    let scope = &room["cluster"];
    assert_eq!(scope["partial"], true, "{room}");
    assert_eq!(scope["nodes_expected"], 3, "{room}");
    assert_eq!(scope["nodes_answered"], 2, "{room}");
    assert_eq!(scope["missing"], serde_json::json!(["c"]), "{room}");
    let body = a.http("GET", "/metrics", "").body;
    assert!(
        metric(&body, "ringport_cluster_queries_total{outcome=\"partial\"}") >= 1,
        "{body}"
    );

    // Back: the sums are whole again.
    let deadline = Instant::now() + WAIT;
    loop {
        let room = get(&a, "/v1/rooms/r");
        if room["cluster"]["partial"] == false && room["online"] == 6 {
            break;
        }
        assert!(Instant::now() < deadline, "never whole again: {room}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A HELLO of `tok` on `n` that must be refused: its CLOSE reason and text.
fn refused(n: &impl Node, tok: &str) -> (CloseReason, String) {
    match n.client().hello(tok) {
        Frame::Close { reason, text } => (reason, text),
        other => panic!("expected CLOSE, got {other:?}"),
    }
}

#[test]
fn a_users_connections_are_capped_over_every_node_as_on_one() {
    // What one node answers the connection over the cap.
    let mut single = test_config();
    single.auth.secret = Some(SECRET.into());
    single.limits.max_connections_per_user = 2;
    let alone = TestServer::start(single);
    let tok = token("capped", &[]);
    let _held = [alone.welcomed(&tok), alone.welcomed(&tok)];
    let local = refused(&alone, &tok);
    assert_eq!(local.0, CloseReason::POLICY, "{}", local.1);

    let broker = Broker::start(None);
    let nodes =
        ["a", "b", "c"].map(|id| node_with(&broker, id, |c| c.limits.max_connections_per_user = 2));
    for n in &nodes {
        n.wait_metric("ringport_cluster_nodes 3");
    }
    let on_a = nodes[0].welcomed(&tok);
    nodes[1].wait_metric("ringport_cluster_user_connections_elsewhere 1");
    let _on_b = nodes[1].welcomed(&tok);
    nodes[2].wait_metric("ringport_cluster_user_connections_elsewhere 2");
    // The third connection, on a node with none of the user's: refused as on one node, and
    // counted (the limit counters are per process: in-process nodes share them).
    let hits = |n: &TestServer| {
        let body = n.http("GET", "/metrics", "").body;
        metric(
            &body,
            "ringport_limit_hits_total{limit=\"connections_per_user\"}",
        )
    };
    let before = hits(&nodes[2]);
    assert_eq!(refused(&nodes[2], &tok), local);
    assert!(hits(&nodes[2]) > before);
    // ... and on a node with one of them.
    nodes[0].wait_metric("ringport_cluster_user_connections_elsewhere 1");
    assert_eq!(refused(&nodes[0], &tok), local);
    // Another user is not affected.
    let _other = nodes[2].welcomed(&token("other", &[]));

    // One closes: c hears of it and admits a new one.
    drop(on_a);
    nodes[2].wait_metric("ringport_cluster_user_connections_elsewhere 1");
    let _on_c = nodes[2].welcomed(&tok);
    // a: the capped user's on b and c, and "other" on c.
    nodes[0].wait_metric("ringport_cluster_user_connections_elsewhere 3");
    assert_eq!(refused(&nodes[0], &tok), local);
}

/// A misbehaving peer on the bus (here a raw NATS connection) announces 5 node names with
/// 1,000 users each: the node keeps `cluster.max_user_entries` of them, counts the rest as
/// refused, and goes on admitting its own clients.
#[test]
fn a_peer_cannot_grow_the_per_user_table_past_its_bound() {
    use std::io::{BufRead, BufReader, Write};

    let broker = Broker::start(None);
    let a = node_with(&broker, "a", |c| {
        c.cluster.max_user_entries = 100;
        c.limits.max_connections_per_user = 2;
    });
    a.wait_metric("ringport_cluster_connected{node=\"a\"} 1");
    let stream = std::net::TcpStream::connect(("127.0.0.1", broker.port)).unwrap();
    stream.set_read_timeout(Some(WAIT)).unwrap();
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut line = String::new();
    reader.read_line(&mut line).unwrap();
    assert!(line.starts_with("INFO "), "{line}");
    let mut peer = stream;
    peer.write_all(b"CONNECT {\"verbose\":false}\r\n").unwrap();
    for n in 0..5 {
        let mut body = format!("rogue-{n}");
        for u in 0..1_000 {
            body.push_str(&format!("\nu{u} 1"));
        }
        let msg = format!("PUB ringport.conns {}\r\n{body}\r\n", body.len());
        peer.write_all(msg.as_bytes()).unwrap();
    }
    // The broker answers PONG once it has routed every PUB before it.
    peer.write_all(b"PING\r\n").unwrap();
    loop {
        line.clear();
        reader.read_line(&mut line).unwrap();
        if line.starts_with("PONG") {
            break;
        }
    }
    // Bounded poll: a's bridge takes the five messages in its own time.
    let deadline = Instant::now() + WAIT;
    loop {
        let body = common::cluster::scrape(&a);
        let refused = metric(&body, "ringport_cluster_user_entries_refused_total");
        let entries = metric(&body, "ringport_cluster_user_entries");
        assert!(entries <= 100, "{entries} entries kept");
        if refused == 4_900 {
            assert_eq!(entries, 100);
            break;
        }
        assert!(Instant::now() < deadline, "refused {refused} of 4900");
        std::thread::sleep(Duration::from_millis(20));
    }
    // What it kept counts against the cap: rogue-0's u0..u99 came first (one publisher's
    // messages arrive in order), so u1 has one connection elsewhere and gets one here; u500
    // was not kept, so its two connections here are admitted. The node serves its clients.
    let tok = token("u1", &[]);
    let _u1 = a.welcomed(&tok);
    assert_eq!(refused(&a, &tok).0, CloseReason::POLICY);
    let tok = token("u500", &[]);
    let _u500 = [a.welcomed(&tok), a.welcomed(&tok)];
}
