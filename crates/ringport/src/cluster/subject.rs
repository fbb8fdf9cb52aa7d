//! NATS subjects of the cluster bus, one per stream:
//!
//! - `{prefix}.room.{room}`: pushes and client PUBLISHes to a room;
//! - `{prefix}.user.{user}`: pushes to a user's inbox;
//! - `{prefix}.all`: broadcasts.
//!
//! A name becomes one subject token. Names made only of letters, digits, `-` and `_` are
//! used as they are; any other name (dots, spaces, `*`, `>`, non-ASCII...) is written as
//! `~` followed by its bytes in hex, so no name can split into two tokens or act as a
//! wildcard. `~` is never kept verbatim, so the two forms cannot collide.

use crate::gateway::Target;

fn plain(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// The subject token of `name`.
pub fn token(name: &str) -> String {
    if plain(name) {
        return name.to_owned();
    }
    let mut t = String::with_capacity(1 + 2 * name.len());
    t.push('~');
    for b in name.bytes() {
        t.push_str(&format!("{b:02x}"));
    }
    t
}

/// The name a subject token stands for (`None`: not a token [`token`] makes).
pub fn untoken(t: &str) -> Option<String> {
    let Some(hex) = t.strip_prefix('~') else {
        return plain(t).then(|| t.to_owned());
    };
    if hex.len() % 2 != 0 || hex.is_empty() {
        return None;
    }
    let bytes = (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(hex.get(i..i + 2)?, 16).ok())
        .collect::<Option<Vec<u8>>>()?;
    let name = String::from_utf8(bytes).ok()?;
    (!plain(&name)).then_some(name)
}

/// The subject of a room's stream.
pub fn room(prefix: &str, room: &str) -> String {
    format!("{prefix}.room.{}", token(room))
}

/// The subject of a user's inbox.
pub fn user(prefix: &str, user: &str) -> String {
    format!("{prefix}.user.{}", token(user))
}

/// The broadcast subject.
pub fn all(prefix: &str) -> String {
    format!("{prefix}.all")
}

/// Subscriptions that receive every stream's messages (rooms, users, broadcasts).
pub fn every_stream(prefix: &str) -> Vec<String> {
    vec![
        format!("{prefix}.room.*"),
        format!("{prefix}.user.*"),
        all(prefix),
    ]
}

/// Heartbeats of every node (`alive ID` / `leaving ID`).
pub fn nodes(prefix: &str) -> String {
    format!("{prefix}.nodes")
}

/// What a node sends a request to every heartbeat to see the broker answer (nobody
/// subscribes: the broker itself answers "no responders").
pub fn echo(prefix: &str, node: &str) -> String {
    format!("{prefix}.echo.{}", token(node))
}

/// Where a node takes publishes to number for the streams it owns (request/reply).
pub fn owner_inbox(prefix: &str, node: &str) -> String {
    format!("{prefix}.node.{}.publish", token(node))
}

/// Where every node takes cluster-wide count queries (scatter-gather: `query.rs`).
pub fn query(prefix: &str) -> String {
    format!("{prefix}.query")
}

/// Where every node tells the others its connections per user (`users.rs`).
pub fn conns(prefix: &str) -> String {
    format!("{prefix}.conns")
}

/// The subject a message for `target` travels on.
pub fn of(prefix: &str, target: &Target) -> String {
    match target {
        Target::Room(r) => room(prefix, r),
        Target::User(u) => user(prefix, u),
        Target::Everyone => all(prefix),
    }
}

/// The target of a subject under `prefix` (`None`: not one of ours).
pub fn target(prefix: &str, subject: &str) -> Option<Target> {
    let rest = subject.strip_prefix(prefix)?.strip_prefix('.')?;
    if rest == "all" {
        return Some(Target::Everyone);
    }
    let (kind, t) = rest.split_once('.')?;
    let name = untoken(t)?;
    match kind {
        "room" => Some(Target::Room(name)),
        "user" => Some(Target::User(name)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_through_one_token() {
        for name in [
            "lobby", "a-b_c", "a.b", "x y", "*", ">", "~7e", "żółw", "a.>",
        ] {
            let t = token(name);
            assert!(!t.contains(['.', ' ', '*', '>']), "{name:?} -> {t:?}");
            assert_eq!(untoken(&t).as_deref(), Some(name), "{name:?} -> {t:?}");
        }
        // A hex form of a plain name is not one token makes: refused, not aliased.
        assert_eq!(untoken("~6162"), None);
        assert_eq!(untoken("~6"), None);
        assert_eq!(untoken(""), None);
    }

    #[test]
    fn subjects_map_back_to_targets() {
        for t in [
            Target::Room("game.1".into()),
            Target::User("u-7".into()),
            Target::Everyone,
        ] {
            assert_eq!(target("rp", &of("rp", &t)), Some(t));
        }
        assert_eq!(target("rp", "other.room.a"), None);
        assert_eq!(target("rp", "rp.node.a"), None);
    }
}
