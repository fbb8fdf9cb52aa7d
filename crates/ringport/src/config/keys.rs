//! The table of every configuration key: its type (for parsing env and flag strings) and its
//! documentation (for `ringport config default`). A test keeps it in step with [`Config`].

use super::Config;

/// How a key's value is written, so strings from the environment and flags can be parsed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyKind {
    /// Non-negative integer.
    Int,
    Bool,
    Str,
    /// `ip:port`.
    Addr,
    /// One of a fixed set of lowercase words.
    Enum(&'static [&'static str]),
}

impl KeyKind {
    pub fn describe(self) -> &'static str {
        match self {
            KeyKind::Int => "a non-negative integer",
            KeyKind::Bool => "a boolean (true/false)",
            KeyKind::Str => "a string",
            KeyKind::Addr => "a socket address like 127.0.0.1:4667",
            KeyKind::Enum(_) => "one of the listed words",
        }
    }
}

/// One documented key.
#[derive(Debug, Clone, Copy)]
pub struct KeyDoc {
    pub section: &'static str,
    pub key: &'static str,
    pub kind: KeyKind,
    /// Unset by default; `config default` shows it commented out with this example value.
    pub example_when_unset: Option<&'static str>,
    pub doc: &'static str,
}

const fn k(section: &'static str, key: &'static str, kind: KeyKind, doc: &'static str) -> KeyDoc {
    KeyDoc {
        section,
        key,
        kind,
        example_when_unset: None,
        doc,
    }
}

const fn opt(
    section: &'static str,
    key: &'static str,
    kind: KeyKind,
    example: &'static str,
    doc: &'static str,
) -> KeyDoc {
    KeyDoc {
        section,
        key,
        kind,
        example_when_unset: Some(example),
        doc,
    }
}

use KeyKind::{Addr, Bool, Int, Str};

/// Every key, in the order `config default` prints them.
pub const KEYS: &[KeyDoc] = &[
    k("server", "listen", Addr, "Client listener for the native protocol (ip:port)."),
    k("server", "workers", Int, "Shard threads, each with its own io_uring; 0 = one per available core. At most 255."),
    k("server", "pin_cpus", Bool, "Pin shard i to CPU i."),
    k("server", "backlog", Int, "listen(2) backlog of the client listener."),
    k("server", "app", KeyKind::Enum(&["gateway", "echo"]), "Application on the data plane: \"gateway\" (rooms, auth, push) or \"echo\" (bare engine test)."),
    k("server", "memory_budget_bytes", Int, "Memory for send queues, receive buffers and history together; above it new connections are refused with CLOSE POLICY and the largest send queues are closed first. 0 = half of physical memory (or of the cgroup memory limit, if lower)."),
    k("engine", "max_connections_per_shard", Int, "Connections per shard; the gateway enforces max_connections_per_shard x workers process-wide (any shard may hold more than its share; each shard's registered file table is sized for the whole cap plus 64) and answers a connection over it with CLOSE POLICY \"server full\"."),
    k("engine", "max_descriptor_tables", Int, "Most io_uring direct descriptor tables per shard, 1 to 1024. The kernel caps one table at RLIMIT_NOFILE entries, so a shard adds tables (one more ring in its thread, with a quarter of ring_entries and an eighth of recv_buffers) as they fill: a shard holds up to RLIMIT_NOFILE x max_descriptor_tables connections. On epoll sockets live in the process fd table instead and RLIMIT_NOFILE caps connections per process (logged at start)."),
    k("engine", "ring_entries", Int, "io_uring submission queue entries per shard, 8 to 32768 (the kernel rounds up to a power of two)."),
    k("engine", "recv_buffer_size", Int, "Bytes per provided receive buffer."),
    k("engine", "recv_buffers", Int, "Provided receive buffers per shard; a power of two up to 32768. Idle connections pin none, but the kernel cycles through all of them, so recv_buffers x recv_buffer_size becomes resident per shard once traffic has passed (until trimmed, see recv_buffer_trim_ms)."),
    k("engine", "recv_buffer_trim_ms", Int, "Give the receive buffers' memory back to the kernel (madvise MADV_DONTNEED) once a shard has had no receive for this long, 0 to 86400000; 0 = never. An idle shard then holds none of it; the next receives fault in fresh pages. io_uring only, and only the ring of a shard's first descriptor table (set up with DEFER_TASKRUN, Linux 6.1+). Counted in ringport_shard_recv_buffer_trimmed_bytes_total."),
    k("engine", "send_high_water", Int, "Bytes queued for one connection before it is closed as a slow consumer; at most 4294967295."),
    k("engine", "max_sends_per_turn", Int, "Most connections a shard starts a send for in one loop turn, 2 to 1000000. A loopback send costs ~5-10 us of the shard's core, so a fan-out to thousands issued at once would hold the shard (and every handshake, receive and timer on it) for tens of ms; past the budget the rest wait, in order and still coalescing, for the next turns, which do not block. Sends leave in the order connections became ready, except a connection's first send (a WELCOME), which goes ahead of the waiting ones within half the budget. Counted in ringport_sends_deferred_total."),
    k("engine", "max_send_bytes_per_turn", Int, "Most bytes a shard offers the kernel in the sends it starts in one loop turn, 4096 to 1073741824. A send copies what it carries into the socket, and loopback's send buffer takes MiBs, so a few sends of queued large messages (to peers that stopped reading, say) could hold the shard for tens of ms; a send gathers queued messages only up to what is left of the budget (at least one message), and once it is spent the other ready connections wait, in order, for the next turns. Small-message fan-outs never reach it. Counted in ringport_sends_deferred_total."),
    k("engine", "close_linger_ms", Int, "How long a graceful close may drain the send queue; also how long a CLOSE frame may take to flush (the protocol's drain timeout)."),
    k("engine", "close_discard_max_bytes", Int, "What a gracefully closing connection's peer may still send once everything queued to it and the FIN are out, read and discarded (counted in whole KiB per receive), before the close is cut short: closed at once (the kernel resets it) instead of waiting for its FIN or close_linger_ms. Not at shutdown (every peer may then finish). 1024 to 67108864; 67108864 = no cap. A flooder is then not read at line rate for the whole linger. A connection closed before its WELCOME or for abuse (limits.handshakes_per_abusive_close) may send at most 131072 (two of the largest frames allowed before WELCOME), whatever this is. Counted in ringport_closes_cut_short_total."),
    k("engine", "idle_timeout_ms", Int, "Close connections that receive nothing for this long; 0 = off (heartbeats still apply)."),
    k("engine", "timer_tick_ms", Int, "Resolution of each shard's timing wheel."),
    k("engine", "accept_backoff_ms", Int, "Pause accepting this long after EMFILE/ENFILE/ENOMEM."),
    k("engine", "shutdown_timeout_ms", Int, "Longest graceful shutdown before connections are aborted."),
    k("engine", "resolve_peer_addr", Bool, "Look up each accepted connection's peer address (shown by the connections API)."),
    k("engine", "shutdown_drain_ms", Int, "At exit, how long each shard waits for the kernel to finish its cancelled operations; past it the shard exits and leaks the memory they may still use instead of freeing it under the kernel."),
    k("engine", "io_backend", KeyKind::Enum(&["auto", "uring", "epoll"]), "I/O backend: \"auto\" probes io_uring once at start and falls back to epoll where it is blocked (EPERM, ENOSYS, kernel.io_uring_disabled, a missing opcode; never on ENOMEM); \"uring\" or \"epoll\" force one. The environment variable RINGPORT_IO_BACKEND, when set, replaces \"auto\". On epoll, sockets live in the process fd table, so RLIMIT_NOFILE caps connections per process."),
    k("engine", "sched_slice_us", Int, "Scheduler time slice each shard thread asks for, in microseconds (100 to 100000; 0 = the kernel's default): sched_setattr's sched_runtime, which the EEVDF scheduler of Linux 6.12+ takes as the thread's slice (older kernels ignore it). Where shards share a core with each other or with other busy threads, a shard woken by a completion (a handshake's next step) otherwise waits for the running thread's slice to end, which the kernel notices at its tick (4 ms at HZ=250); a shorter slice lets it in sooner. A failure is logged once per shard."),
    k("engine", "yield_between_chunks", Bool, "While a fan-out's sends wait for later turns (max_sends_per_turn, max_send_bytes_per_turn), the shard yields the core (sched_yield) after each turn's chunk. Such turns never sleep, so a thread sharing the core (another shard with a connection to accept or a HELLO to answer) would otherwise get in only at the scheduler's tick (4 ms at HZ=250), whatever sched_slice_us asks for. With nothing else runnable a yield returns at once. Counted in ringport_shard_yields_total."),
    k("protocol", "max_payload", Int, "Largest frame payload in bytes (after the 8-byte header) a client may send and the server will push; announced in WELCOME as max_payload."),
    k("protocol", "heartbeat_interval_ms", Int, "How often an awake client must show signs of life."),
    k("protocol", "heartbeat_tolerated", Int, "Heartbeat intervals that may pass in silence before the server probes."),
    k("protocol", "heartbeat_probe_interval_ms", Int, "Spacing of server probes to a silent client; at most heartbeat_interval_ms."),
    k("protocol", "heartbeat_close_after", Int, "Unanswered probes after which the connection is closed (rounded up to whole heartbeat intervals)."),
    k("protocol", "handshake_timeout_ms", Int, "A connection must complete its handshake within this time."),
    k("protocol", "max_sleep_interval_ms", Int, "Longest heartbeat interval a sleeping client may ask for; at least heartbeat_interval_ms."),
    k("protocol", "sleep_holdback", Int, "Room messages held back for a sleeping client; beyond this newer ones are skipped (each stream from its first skipped offset on until an urgent message of it, so the held ones stay in order) and reported in WAKE_ACK."),
    opt("auth", "secret", Str, "\"a-random-string-of-at-least-32-bytes\"", "HS256 secret for client tokens (at least 32 bytes). Prefer RINGPORT_AUTH_SECRET over writing it here."),
    opt("auth", "allow_anonymous", Bool, "false", "Accept clients without a token. Unset = true exactly when no secret is set."),
    k("rooms", "max_rooms_per_connection", Int, "Rooms one connection may join; a JOIN or resume entry past it is refused LIMIT_EXCEEDED (ringport_limit_hits_total{limit=\"rooms_per_connection\"})."),
    k("rooms", "publish_rate_per_sec", Int, "Sustained client publishes per second per connection; 0 = clients may not publish."),
    k("rooms", "publish_burst", Int, "Client publishes allowed in a burst (token bucket size)."),
    k("rooms", "max_publish_size", Int, "Largest client publish payload in bytes; at most protocol.max_payload."),
    k("rooms", "batch_window_ms", Int, "Send each room's messages at most once per this many ms per shard, 0 to 1000: one arriving a whole window after the shard last sent its room goes at once, later ones wait for the window and leave together (coalesced per connection); other rooms are not held; 0 = every message at once."),
    k("rooms", "max_pending_deliveries", Int, "Messages queued for one shard and not yet handed to its connections (pushes arrive faster than the shard delivers); a push beyond it is refused before it is published: HTTP 503 unavailable, PUBLISH_ACK RATE_LIMITED (ringport_limit_hits_total{limit=\"delivery_backlog\"})."),
    k("history", "max_messages_per_stream", Int, "Messages kept per stream for resume; 0 = no history."),
    k("history", "max_age_ms", Int, "Drop history older than this; 0 = no age limit."),
    // --- abuse limits (issue 10) ---
    k("history", "max_bytes", Int, "Budget of all history memory together (frames plus bookkeeping); over it the oldest messages of any stream are evicted and a resume across them gets GAP."),
    k("history", "idle_ttl_ms", Int, "A stream's log (offsets and history) is removed after this long without a new message; its offsets later continue above every removed tail."),
    k("history", "max_replay_bytes", Int, "History bytes one HELLO may replay over all its resume entries; beyond it the oldest messages are skipped and the entry is answered GAP. 0 = never replay."),
    k("history", "replay_slice_bytes", Int, "History bytes a shard replays per loop turn over all resuming connections (each message counts 64 bytes more than its size); the rest follows in later turns, so a large resume never stalls other connections."),
    // --- end abuse limits ---
    k("limits", "max_connections_per_ip", Int, "Connections open at once from one IP address; one more is sent CLOSE POLICY. 0 = no limit."),
    k("limits", "handshakes_per_ip_per_sec", Int, "Sustained new connections per second from one IP address (token bucket); beyond it a new connection is sent CLOSE POLICY. 0 = no limit."),
    k("limits", "handshake_burst_per_ip", Int, "New connections one IP address may open in a burst."),
    k("limits", "handshakes_per_abusive_close", Int, "New-connection tokens of handshakes_per_ip_per_sec that a connection closed for abuse (control frames or JOIN/LEAVE over their rates, CLOSE POLICY; or bytes that break the protocol, native, WebSocket or TLS, other than a later version's HELLO) costs its address, so a flooder cannot reconnect for a fresh burst or a fresh answer; at most handshake_burst_per_ip is owed. 0 = no cost."),
    k("limits", "refusals_answered_per_ip_per_sec", Int, "Refusals per second (and in a burst) that one IP address is told the reason of (CLOSE POLICY, then a graceful close); its other connections refused in that time are closed at once without an answer (the peer sees EOF or a reset), so a reconnect flood costs an accept and a close each instead of a CLOSE frame, a FIN exchange and the linger. 0 = answer every refusal."),
    k("limits", "auth_failures_per_ip_per_sec", Int, "Sustained failed handshakes (AUTH_FAILED) per second from one IP address once its burst is spent; beyond it the address's new connections are sent CLOSE POLICY. 0 = no limit."),
    k("limits", "auth_failure_burst_per_ip", Int, "Failed handshakes one IP address may have in a burst."),
    k("limits", "max_connections_per_user", Int, "Connections open at once for one user (the token's sub), on every shard and address together (in a cluster, on every node together); one more HELLO is answered CLOSE POLICY. 0 = no limit."),
    k("limits", "room_ops_per_sec", Int, "Sustained JOIN and LEAVE requests per second on one connection; beyond it they are answered RATE_LIMITED, and a connection that sends a whole burst more while limited is closed with POLICY. 0 = no limit."),
    k("limits", "room_ops_burst", Int, "JOIN and LEAVE requests one connection may send in a burst."),
    k("limits", "control_frames_per_sec", Int, "Sustained control frames (PING, PONG, SLEEP, WAKE, ACK, and WebSocket pings and pongs) per second on one connection; beyond it the connection is closed with POLICY. 0 = no limit."),
    k("limits", "control_frames_burst", Int, "Control frames one connection may send in a burst."),
    k("limits", "publish_bytes_per_ip_per_sec", Int, "Sustained bytes of client PUBLISH payloads per second from one IP address, over all its connections (each publish counts its payload rounded up to 64 bytes, at least 64); beyond it a publish is answered RATE_LIMITED (ringport_limit_hits_total{limit=\"publish_bytes\"}). A fresh connection's own publish burst does not refill it. 0 = no limit; at most 64000000."),
    k("limits", "publish_burst_bytes_per_ip", Int, "Bytes of PUBLISH payloads one IP address may send in a burst; at least 65536 (one publish of the largest payload)."),
    k("limits", "max_tracked_ips", Int, "IP addresses whose connection counts and rates are remembered at once; beyond it the least recently seen address without open connections is forgotten."),
    k("limits", "exempt_loopback", Bool, "Exempt loopback peers (127.0.0.0/8, ::1) from the per-IP limits: behind a local proxy every client looks like loopback."),
    k("websocket", "enabled", Bool, "Accept WebSocket (RFC 6455) upgrades on server.listen: a connection whose first bytes are \"GET \" is an HTTP upgrade request, any other speaks the native protocol."),
    k("websocket", "path", Str, "Request path of the WebSocket endpoint (a query string is ignored); other paths are answered 404."),
    k("websocket", "max_request_bytes", Int, "Largest upgrade request (request line and headers) in bytes; a longer one is answered 431 and closed. The request must also complete within protocol.handshake_timeout_ms. 512 to 1048576."),
    k("websocket", "max_message_bytes", Int, "Largest binary message (the sum of its fragments) in bytes, refused from its frame headers before it is buffered (close code 1009); 0 = one frame of protocol.max_payload (max_payload + 8), otherwise at least that."),
    opt("tls", "cert_file", Str, "\"/etc/ringport/cert.pem\"", "PEM certificate chain (leaf first) for TLS on server.listen; setting it turns TLS on. A connection whose first byte is 0x16 is TLS, and the native-or-WebSocket choice is made inside it. Re-read on SIGHUP: new handshakes use the new certificate, open connections keep theirs."),
    opt("tls", "key_file", Str, "\"/etc/ringport/key.pem\"", "PEM private key (PKCS#8, PKCS#1 or SEC1) of cert_file's leaf; required with cert_file, re-read with it on SIGHUP."),
    opt("tls", "client_ca_file", Str, "\"/etc/ringport/client-ca.pem\"", "PEM CA certificates that client certificates must chain to (mutual TLS, e.g. for devices). Unset = no client certificates are asked for. Re-read on SIGHUP."),
    k("tls", "client_auth", KeyKind::Enum(&["required", "optional"]), "With client_ca_file: \"required\" refuses a handshake without a valid client certificate, \"optional\" lets a client without one in (a bad one is still refused)."),
    k("tls", "allow_plaintext", Bool, "With TLS on, also accept plaintext (native and ws://) connections on server.listen; false makes the port TLS-only (a plaintext connection is closed at once, ringport_tls_plaintext_refused_total)."),
    k("admin", "listen", Addr, "HTTP API and /metrics listener. A non-loopback address requires api_key."),
    opt("admin", "api_key", Str, "\"a-random-string-of-at-least-16-bytes\"", "Bearer key for the HTTP API (Authorization: Bearer KEY or X-Api-Key). Required when listen is not loopback; enforced whenever set."),
    k("admin", "max_body_size", Int, "Largest accepted HTTP request body in bytes."),
    // --- abuse limits (issue 10) ---
    k("admin", "header_timeout_ms", Int, "A request head must be complete this long after the connection is accepted or its first byte arrives; otherwise the connection is closed."),
    k("admin", "body_timeout_ms", Int, "A request's body must arrive and the request be answered this long after its head; otherwise 408 and the connection is closed. At least 2500."),
    k("admin", "idle_timeout_ms", Int, "A kept-alive connection with no request in progress is closed after this long."),
    k("admin", "max_connections", Int, "Admin connections open at once; one more is answered 503 and closed. One descriptor is kept in reserve so /healthz and /metrics still answer when the process is out of descriptors."),
    k("admin", "idempotency_ttl_ms", Int, "How long a push's Idempotency-Key answers its first outcome instead of publishing again. 1000 to 86400000."),
    k("admin", "idempotency_max_keys", Int, "Idempotency keys remembered at once; a new key beyond this forgets the oldest (ringport_limit_hits_total{limit=\"idempotency_keys\"})."),
    k("admin", "max_batch_items", Int, "Items one POST /v1/publish/batch may carry; more is answered 413 (ringport_limit_hits_total{limit=\"batch_items\"})."),
    k("admin", "max_page_size", Int, "Largest page of GET /v1/rooms/{room}/history, /v1/users/{user}/history and /v1/rooms/{room}/presence; a larger limit is clamped."),
    k("admin", "demo", Bool, "Serve the live-comment demo page at GET /demo (and the JavaScript SDK it loads under /sdk/) without the API key; when auth.secret is set, GET /demo/token also mints short-lived tokens (a random guest user admitted to rooms demo.*) for anyone who can reach this listener. Off by default: only turn it on where that is acceptable."),
    opt("admin", "demo_ws_url", Str, "\"wss://push.example.com/ringport\"", "WebSocket URL the demo page connects to. Unset = ws:// + the host the page was loaded from + the port of server.listen + websocket.path."),
    k("admin", "demo_token_ttl_ms", Int, "Lifetime of a token minted by GET /demo/token (the page keeps it in the tab's sessionStorage and asks for a new one when less than a minute is left). 1000 to 86400000."),
    // --- end abuse limits ---
    k("log", "format", KeyKind::Enum(&["text", "json"]), "\"text\" for people, \"json\" for log pipelines."),
    k("log", "level", Str, "A tracing filter such as \"info\" or \"ringport=debug,warn\". RUST_LOG overrides the file."),
    opt("cluster", "servers", Str, "\"nats://127.0.0.1:4222\"", "NATS servers of the cluster bus, comma-separated nats:// or tls:// URLs (--cluster). Unset = a single node with no broker."),
    opt("cluster", "node_id", Str, "\"gw-a\"", "This node's name on the bus: letters, digits, '-' and '_' (--node-id). Unset = node- and 8 random hex digits."),
    k("cluster", "subject_prefix", Str, "First token of every NATS subject this cluster uses, so several clusters can share one broker."),
    opt("cluster", "credentials_file", Str, "\"/etc/ringport/nats.creds\"", "NATS credentials file (.creds: user JWT and NKey seed) for the broker connection."),
    opt("cluster", "tls_ca_file", Str, "\"/etc/ringport/nats-ca.pem\"", "PEM file of CA certificates the broker's TLS certificate must chain to."),
    k("cluster", "tls_required", Bool, "Refuse a broker connection without TLS."),
    k("cluster", "max_pending", Int, "Messages waiting to be handed to the broker connection; a message beyond it, or any while the broker is unreachable, is delivered on this node only and counted in ringport_cluster_dropped_total."),
    k("cluster", "connect_timeout_ms", Int, "A connection attempt to one NATS server gives up after this long."),
    k("cluster", "ping_interval_ms", Int, "How often the broker connection is probed; two unanswered probes close it and start reconnecting."),
    k("cluster", "reconnect_max_delay_ms", Int, "Longest pause between reconnection attempts to the broker; the pause doubles from 100 ms up to it."),
    k("cluster", "publish_timeout_ms", Int, "Longest wait to hand one message to the NATS client (its buffer is full while the broker is slow); then the message is dropped and counted. Also bounds the wait for a stream's owner node to number a forwarded publish; then this node numbers it itself (in its own epoch) and counts it."),
    k("cluster", "query_timeout_ms", Int, "Longest wait for the other nodes' answers to a cluster-wide count (GET /v1/rooms/{room}, its presence, /v1/stats); a live node that did not answer by then is left out and the answer says partial: true (counted in ringport_cluster_queries_total)."),
    k("cluster", "max_user_entries", Int, "(user, node) entries a node keeps of the other nodes' connections per user (only with limits.max_connections_per_user set; about 100 bytes each), so a misbehaving peer cannot grow the table without bound; a count beyond it is not kept (that user's connections on that node are not counted against the cap here), counted in ringport_cluster_user_entries_refused_total with a warning at most once a second."),
    k("cluster", "replicate_history", Bool, "Every node receives every stream's messages and keeps a replica of its history, so a client resumes on any node; `false` routes by interest only (a node receives the streams it has members of; a resume on a node without the stream's history is answered GAP or EPOCH_CHANGED)."),
];

/// Looks a key up by section and name.
pub fn find(section: &str, key: &str) -> Option<&'static KeyDoc> {
    KEYS.iter().find(|d| d.section == section && d.key == key)
}

/// The full default configuration as commented TOML (`ringport config default`).
pub fn default_toml() -> String {
    let defaults = toml::Table::try_from(Config::default()).unwrap_or_default();
    let mut out = String::from(
        "# ringport configuration (defaults). Precedence: defaults < this file < environment < flags.\n\
         # Every key can be set by environment variable RINGPORT_<SECTION>__<KEY> (e.g.\n\
         # RINGPORT_ENGINE__RING_ENTRIES=8192) or by flag --set section.key=value.\n",
    );
    let mut section = "";
    for d in KEYS {
        if d.section != section {
            section = d.section;
            out.push_str(&format!("\n[{section}]\n"));
        }
        out.push_str(&format!("# {}\n", d.doc));
        let value = defaults
            .get(d.section)
            .and_then(|s| s.as_table())
            .and_then(|t| t.get(d.key));
        match (value, d.example_when_unset) {
            (Some(v), _) => out.push_str(&format!("{} = {}\n", d.key, v)),
            (None, Some(example)) => out.push_str(&format!("# {} = {}\n", d.key, example)),
            (None, None) => out.push_str(&format!("# {} is unset\n", d.key)),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_toml_parses_back_to_defaults() {
        let text = default_toml();
        let parsed: Config = toml::from_str(&text).unwrap();
        assert_eq!(parsed, Config::default());
        for d in KEYS {
            assert!(
                text.contains(d.doc),
                "{}.{} has its comment",
                d.section,
                d.key
            );
        }
    }

    #[test]
    fn key_table_matches_config_struct() {
        let mut full = Config::default();
        full.auth.secret = Some("s".into());
        full.auth.allow_anonymous = Some(true);
        full.admin.api_key = Some("k".into());
        full.admin.demo_ws_url = Some("ws://h/".into());
        full.cluster.servers = Some("nats://127.0.0.1:4222".into());
        full.cluster.node_id = Some("a".into());
        full.cluster.credentials_file = Some("c".into());
        full.cluster.tls_ca_file = Some("c".into());
        full.tls.cert_file = Some("c".into());
        full.tls.key_file = Some("k".into());
        full.tls.client_ca_file = Some("a".into());
        let table = toml::Table::try_from(full).unwrap();
        let mut seen = 0;
        for (section, keys) in &table {
            for key in keys.as_table().unwrap().keys() {
                assert!(
                    find(section, key).is_some(),
                    "{section}.{key} missing from KEYS"
                );
                seen += 1;
            }
        }
        assert_eq!(
            seen,
            KEYS.len(),
            "KEYS lists a key the Config struct does not have"
        );
        for d in KEYS.iter().filter(|d| d.example_when_unset.is_some()) {
            let line = format!("{} = {}", d.key, d.example_when_unset.unwrap_or_default());
            let parsed: Result<toml::Table, _> = toml::from_str(&line);
            assert!(
                parsed.is_ok(),
                "example for {}.{} is valid TOML",
                d.section,
                d.key
            );
        }
    }
}
