//! The gateway's per-connection indexes filled for `n` connections without sockets, for heap
//! measurements at a million connections (`tests/memory_at_scale.rs`, issue 16): a test
//! process cannot open a million sockets (20,000 descriptors), but these tables are where
//! the heap per connection changes with the count (hash tables double; vectors grow).
//!
//! Each connection goes through the same calls as an authenticated HELLO and a JOIN of one
//! room in `handler/mod.rs`: the shard's user index, the process-wide per-user counts
//! (default `limits.max_connections_per_user`), the session registry, the room's members.

use std::any::Any;
use std::sync::Arc;

use ringport_io::ConnId;

use super::admission::UserCounts;
use super::rooms::{RoomIndex, UserIndex};
use crate::config::LimitsConfig;
use crate::streams::PublishDedupes;

/// The tables, each boxed so that a caller can drop them one at a time and see what each
/// held. In drop order: the room index, the per-user counts, the session registry, then the
/// user indexes, which hold the user ids' strings last.
pub type Tables = Vec<(&'static str, Box<dyn Any>)>;

/// Fills the per-connection indexes of `shards` shards (connections dealt round robin) as
/// `n` connections of distinct users, each joined to room `lobby`, would.
pub fn per_connection_indexes(n: usize, shards: usize) -> Tables {
    let shards = shards.max(1);
    let mut rooms: Vec<RoomIndex> = (0..shards).map(|_| RoomIndex::new(None)).collect();
    let mut users: Vec<UserIndex> = (0..shards).map(|_| UserIndex::new(None)).collect();
    let counts = UserCounts::new(&LimitsConfig::default());
    let sessions = PublishDedupes::new(super::SESSION_LOCKS, super::PUBLISH_DEDUPE_WINDOW);
    for i in 0..n {
        let shard = i % shards;
        let conn = ConnId::from_u64(i as u64);
        let user: Arc<str> = Arc::from(format!("user-{i}"));
        counts.acquire(&user, 0).expect("one connection per user");
        let user = users[shard].add(&user, conn);
        // Session ids are random in the gateway; a multiplicative hash of `i` spreads them
        // over the registry's locks the same way, and is the same on every run.
        let session = (i as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        assert!(sessions.open(session, user, 0, conn.as_u64()));
        rooms[shard].join("lobby", conn);
    }
    vec![
        ("room members", Box::new(rooms)),
        ("per-user counts", Box::new(counts)),
        ("session registry", Box::new(sessions)),
        ("user index and user ids", Box::new(users)),
    ]
}
