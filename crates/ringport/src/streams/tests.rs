//! Registry tests on a virtual clock.

use std::sync::Arc;

use bytes::Bytes;
use ringport_proto::{Decoder, Frame, Push, StreamName};

use super::*;

const LIM: HistoryLimits = HistoryLimits {
    max_messages: 100,
    max_age_ms: 60_000,
    max_bytes: u64::MAX,
    idle_ttl_ms: u64::MAX,
};

fn room(n: &str) -> StreamName {
    StreamName::Room(n.into())
}

/// Appends a real PUSH frame, as the gateway does.
fn publish(s: &Streams, stream: &StreamName, now: u64, body: &str) -> u64 {
    let epoch = s.epoch();
    let (off, _) = s.append(stream, now, &mut |offset| {
        Frame::Push(Push {
            stream: stream.clone(),
            epoch,
            offset,
            urgent: false,
            payload: Bytes::copy_from_slice(body.as_bytes()),
        })
        .to_bytes()
        .unwrap()
    });
    off
}

fn decode_offsets(frames: &[Bytes]) -> Vec<u64> {
    frames
        .iter()
        .map(|b| match Decoder::default().decode_slice(b).unwrap() {
            Some((Frame::Push(p), _)) => p.offset,
            other => panic!("{other:?}"),
        })
        .collect()
}

#[test]
fn streams_are_independent() {
    let s = Streams::with_epoch(LIM, 4, 1);
    assert_eq!(publish(&s, &room("a"), 0, "x"), 1);
    assert_eq!(publish(&s, &room("a"), 0, "x"), 2);
    assert_eq!(publish(&s, &room("b"), 0, "x"), 1);
    assert_eq!(s.stats().streams, 2);
    assert_eq!(s.stats().messages, 3);
}

#[test]
fn replay_is_a_consistent_snapshot() {
    let s = Streams::with_epoch(LIM, 4, 1);
    let a = room("a");
    let epoch = s.epoch();
    for i in 0..10 {
        publish(&s, &a, i, "m");
    }
    let r = s.replay(&a, epoch, 4, 10);
    assert_eq!(r.tail(), 10);
    assert_eq!(decode_offsets(r.frames()), (5..=10).collect::<Vec<_>>());
}

#[test]
fn process_restart_changes_epoch() {
    let a = room("a");
    let old = Streams::new(LIM, 2);
    publish(&old, &a, 0, "m");
    let old_epoch = old.epoch();
    let new = Streams::new(LIM, 2);
    publish(&new, &a, 0, "m");
    match new.replay(&a, old_epoch, 1, 0) {
        Replay::NotRecovered {
            reason: NotRecoveredReason::EpochChanged,
            epoch,
            ..
        } => assert_ne!(epoch, old_epoch),
        other => panic!("{other:?}"),
    }
}

#[test]
fn history_bytes_follow_appends_and_sweeps() {
    let s = Streams::with_epoch(LIM, 4, 1);
    for i in 0..10 {
        publish(&s, &room(&format!("r{}", i % 3)), 0, "hello");
    }
    assert_eq!(s.history_bytes() as usize, s.stats().bytes);
    assert!(s.history_bytes() > 0);
    // Past the age bound, everything is trimmed; offsets are kept.
    s.sweep(60_001);
    assert_eq!(s.history_bytes(), 0);
    assert_eq!(s.stats().streams, 3);
    assert_eq!(publish(&s, &room("r0"), 60_001, "again"), 5);
}

#[test]
fn inbox_acks_and_receipts() {
    let s = Streams::with_epoch(LIM, 4, 1);
    let u = StreamName::User("u1".into());
    let epoch = s.epoch();
    for _ in 0..5 {
        publish(&s, &u, 0, "dm");
    }
    assert_eq!(s.ack(&u, 3), 3);
    assert_eq!(s.ack(&u, 2), 0);
    let r = s.receipts(&u).unwrap();
    assert_eq!((r.acked, r.receipts, r.tail, r.epoch), (3, 3, 5, epoch));
    // Client received all 5 but acked 3: 4 and 5 are redelivered.
    assert_eq!(decode_offsets(s.replay(&u, epoch, 5, 0).frames()), [4, 5]);
    assert_eq!(s.ack(&StreamName::User("nobody".into()), 9), 0);
    assert_eq!(s.acked_total(), 3);
}

#[test]
fn concurrent_appends_get_distinct_contiguous_offsets() {
    let s = Arc::new(Streams::with_epoch(LIM, 2, 1));
    let a = room("a");
    let threads: Vec<_> = (0..4)
        .map(|_| {
            let s = s.clone();
            let a = a.clone();
            std::thread::spawn(move || {
                (0..500)
                    .map(|_| publish(&s, &a, 0, "m"))
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    let mut all: Vec<u64> = threads
        .into_iter()
        .flat_map(|t| t.join().unwrap())
        .collect();
    all.sort_unstable();
    assert_eq!(all, (1..=2_000).collect::<Vec<_>>());
    // History is bounded by count and ends at the tail.
    let r = s.replay(&a, s.epoch(), 1_950, 0);
    assert_eq!(
        decode_offsets(r.frames()),
        (1_951..=2_000).collect::<Vec<_>>()
    );
}

// --- abuse limits (issue 10, item 3) ---

#[test]
fn reading_an_unknown_stream_creates_no_log() {
    let s = Streams::with_epoch(LIM, 4, 1);
    for i in 0..1_000 {
        let r = room(&format!("r{i}"));
        assert_eq!(s.position(&r, 0), (1, 0));
        let replay = s.replay(&r, 1, 0, 0);
        assert_eq!(
            replay,
            Replay::Resumed {
                frames: Vec::new(),
                tail: 0
            }
        );
        assert_eq!(s.ack(&StreamName::User(format!("u{i}")), 5), 0);
    }
    assert_eq!(s.stats().streams, 0);
    assert_eq!(s.streams(), 0);
    publish(&s, &room("r1"), 0, "m");
    assert_eq!((s.stats().streams, s.streams()), (1, 1));
}

#[test]
fn idle_logs_expire_and_offsets_continue_above_them() {
    let lim = HistoryLimits {
        idle_ttl_ms: 1_000,
        ..LIM
    };
    let s = Streams::with_epoch(lim, 4, 1);
    let a = room("a");
    for _ in 0..5 {
        publish(&s, &a, 0, "m");
    }
    publish(&s, &room("b"), 500, "m");
    s.sweep(1_000);
    assert_eq!(s.streams(), 2, "not idle for the full ttl yet");
    s.sweep(1_001);
    assert_eq!(s.streams(), 1, "a expired, b not yet");
    assert_eq!(s.stats().streams, 1);
    // The floor keeps offsets from repeating: a (and any new stream) continues above 5.
    assert_eq!(s.position(&a, 1_001), (1, 5));
    assert_eq!(publish(&s, &room("c"), 1_001, "m"), 6);
    assert_eq!(publish(&s, &a, 1_001, "m"), 6);
    // A client that had a up to 3 is told what it may have missed.
    match s.replay(&a, 1, 3, 1_001) {
        Replay::NotRecovered {
            reason: NotRecoveredReason::Gap,
            missing,
            ..
        } => assert_eq!(missing, 4..6),
        other => panic!("{other:?}"),
    }
    s.sweep(10_000);
    assert_eq!((s.streams(), s.history_bytes()), (0, 0));
}

#[test]
fn byte_budget_evicts_oldest_first_across_streams_and_resume_gets_gap() {
    let probe = Streams::with_epoch(LIM, 1, 1);
    publish(&probe, &room("a"), 0, "0123456789");
    let one = probe.history_bytes();
    let lim = HistoryLimits {
        max_bytes: 4 * one,
        ..LIM
    };
    let s = Streams::with_epoch(lim, 4, 1);
    let (a, b) = (room("a"), room("b"));
    publish(&s, &a, 0, "0123456789"); // a1
    publish(&s, &b, 1, "0123456789"); // b1
    publish(&s, &a, 2, "0123456789"); // a2
    publish(&s, &b, 3, "0123456789"); // b1
    assert_eq!(s.history_bytes(), 4 * one);
    let before = crate::metrics::limits::hits(crate::metrics::Limit::HistoryBytes);
    publish(&s, &b, 4, "0123456789"); // b3 evicts a1, the oldest of all
    assert_eq!(s.history_bytes(), 4 * one);
    assert!(crate::metrics::limits::hits(crate::metrics::Limit::HistoryBytes) > before);
    match s.replay(&a, 1, 0, 5) {
        Replay::NotRecovered {
            reason: NotRecoveredReason::Gap,
            missing,
            frames,
            ..
        } => {
            assert_eq!(missing, 1..2);
            assert_eq!(decode_offsets(&frames), [2]);
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(decode_offsets(s.replay(&b, 1, 0, 5).frames()), [1, 2, 3]);
    publish(&s, &a, 5, "0123456789"); // evicts b1
    publish(&s, &a, 6, "0123456789"); // evicts a2
    assert_eq!(decode_offsets(s.replay(&a, 1, 0, 7).frames()), [3, 4]);
    assert_eq!(decode_offsets(s.replay(&b, 1, 0, 7).frames()), [2, 3]);
    assert_eq!(s.history_bytes() as usize, s.stats().bytes);
}

#[test]
fn eviction_queue_stays_bounded_when_history_is_trimmed_by_count() {
    let lim = HistoryLimits {
        max_messages: 2,
        ..LIM
    };
    let s = Streams::with_epoch(lim, 4, 1);
    for i in 0..20_000 {
        publish(&s, &room(&format!("r{}", i % 10)), 0, "m");
    }
    assert!(
        s.order_len() >= 20_000,
        "stale entries pile up between sweeps"
    );
    s.sweep(0);
    assert!(
        s.order_len() <= 20,
        "{} entries after the sweep",
        s.order_len()
    );
    assert_eq!(s.stats().messages, 20);
}

/// A message another node numbered, kept in this registry's replica.
fn keep(s: &Streams, stream: &StreamName, epoch: u32, offset: u64) -> bool {
    s.insert(stream, epoch, offset, 0, &mut |o| {
        assert_eq!(o, offset, "kept at the owner's offset");
        Bytes::from(format!("{epoch}/{o}"))
    })
    .is_some()
}

#[test]
fn a_replica_keeps_the_owners_numbering_and_never_hides_a_hole() {
    let s = Streams::with_epoch(LIM, 4, 1);
    let r = room("r");
    // The owner (epoch 9) numbers from 5: the replica starts just below it.
    assert!(keep(&s, &r, 9, 5));
    assert!(keep(&s, &r, 9, 6));
    assert!(
        !keep(&s, &r, 9, 6),
        "a duplicate is not kept (nor delivered) twice"
    );
    assert_eq!(s.position(&r, 0), (9, 6));
    assert!(
        matches!(s.replay(&r, 9, 4, 0), Replay::Resumed { ref frames, tail: 6 } if frames.len() == 2)
    );
    // Offset 7 never arrived: the replica restarts at 8, and a resume from 6 is a GAP of 7.
    assert!(keep(&s, &r, 9, 8));
    match s.replay(&r, 9, 6, 0) {
        Replay::NotRecovered {
            reason: NotRecoveredReason::Gap,
            missing,
            ..
        } => assert_eq!(missing, 7..8),
        other => panic!("{other:?}"),
    }
    // Another epoch (the owner changed) replaces the replica: EPOCH_CHANGED for epoch 9.
    assert!(keep(&s, &r, 11, 3));
    assert!(matches!(
        s.replay(&r, 9, 8, 0),
        Replay::NotRecovered {
            reason: NotRecoveredReason::EpochChanged,
            epoch: 11,
            ..
        }
    ));
    // This process becomes the owner: its own epoch, above the replica's tail.
    assert_eq!(publish(&s, &r, 0, "mine"), 4);
    assert_eq!(s.position(&r, 0), (1, 4));
    assert!(s.history_bytes() > 0);
}

#[test]
fn trims_by_count_and_by_age_are_counted() {
    use crate::metrics::limits::{history_trims, HistoryTrim};
    // docs/operations.md, "Limits and abuse": history per stream, counted in
    // ringport_history_trimmed_total{reason}. The counters are process-wide (other tests
    // trim too), so only increases are checked.
    let lim = HistoryLimits {
        max_messages: 2,
        max_age_ms: 1_000,
        ..LIM
    };
    let s = Streams::with_epoch(lim, 4, 1);
    let r = room("trimmed");
    let count = history_trims(HistoryTrim::Count);
    for i in 0..3 {
        publish(&s, &r, i, "x");
    }
    assert!(
        history_trims(HistoryTrim::Count) > count,
        "the third publish drops the first"
    );
    let age = history_trims(HistoryTrim::Age);
    publish(&s, &r, 5_000, "late"); // the two kept ones are 5 s old
    assert!(
        history_trims(HistoryTrim::Age) >= age + 2,
        "both older ones dropped for age"
    );
}
