//! Heap bytes per connection of the gateway's per-connection indexes at up to a million
//! connections (issue 16), measured with a counting allocator and no sockets: the user
//! index, the per-user counts, the session registry and the room's members, filled by
//! `ringport::gateway::scale` through the same calls as HELLO and JOIN.
//!
//! `memory_per_conn.rs` measures everything a connection holds, over real sockets, at
//! 10,000; these tables are the part that changes with the count. A `HashMap` doubles its
//! buckets when it passes 7/8 of a power of two, and every map with one entry per connection
//! (and every evenly loaded part of a sharded one) passes it at the same total: 917,504
//! connections (7/8 of 2^20). The 1,000,000-connection run measured 795 bytes of RSS per
//! connection, with ~139 MB added between 905,560 and 932,078 connections.
//!
//! `cargo test --release -p ringport --test memory_at_scale -- --nocapture` prints the
//! breakdown per table.

mod counting_alloc;
use counting_alloc::{snapshot, MEASURING};

#[global_allocator]
static GLOBAL: counting_alloc::Counting = counting_alloc::Counting;

/// 7/8 of 2^20: where a hash table of one entry per connection doubles its buckets.
const DOUBLING: usize = 917_504;

/// Heap bytes per connection these tables may hold at any count up to a million: 185.5
/// measured (worst, just above [`DOUBLING`]); 274.5 before they were `DenseMap`s. The rest of
/// a connection (engine slot, connection record, session: `memory_per_conn.rs`'s total less
/// these tables, 468 at 10,000) grows by at most an eighth of its vectors' part (~16), so
/// 195 + 468 + 16 keeps the total under 700 at every count (docs/benchmarks.md, "At a
/// million: the tables that grow with the count").
const TABLES_BUDGET: f64 = 195.0;
/// How much the tables' bytes per connection may grow from just below to just above
/// [`DOUBLING`]: +17.6 measured (the 4-byte hash indexes double there); +96.0 before.
const JUMP_BUDGET: f64 = 24.0;

/// Per table, heap bytes per connection of `n` connections over `shards` shards.
fn measure(n: usize, shards: usize) -> Vec<(&'static str, f64)> {
    let base = snapshot().bytes;
    let tables = ringport::gateway::scale::per_connection_indexes(n, shards);
    let full = snapshot().bytes;
    let mut out = Vec::new();
    let mut before = full;
    for (name, table) in tables {
        drop(table);
        let after = snapshot().bytes;
        out.push((name, (before - after) as f64 / n as f64));
        before = after;
    }
    // The counting allocator sees the whole process: the test harness's own threads
    // allocated 1,124 bytes during a 10,000-connection count once in CI. An eighth of a byte
    // per connection (at least 4 KiB) is far below what a table left behind would show.
    let slack = (n as i64 / 8).max(4096);
    assert!(
        (before - base).abs() < slack,
        "every table's bytes are accounted for ({} left, {slack} allowed)",
        before - base
    );
    let total: f64 = out.iter().map(|(_, b)| b).sum();
    let line: Vec<String> = out.iter().map(|(t, b)| format!("{t} {b:.1}")).collect();
    println!(
        "{n:>9} connections, {shards} shard(s): {total:.1} B per connection ({})",
        line.join(", ")
    );
    out.push(("total", total));
    out
}

fn total(m: &[(&str, f64)]) -> f64 {
    m.last().expect("a total").1
}

#[test]
fn per_connection_tables_stay_small_through_the_doubling_point() {
    let _one = MEASURING.lock().unwrap_or_else(|p| p.into_inner());
    // One-time allocations (the process's lazily built state) before the first count.
    drop(ringport::gateway::scale::per_connection_indexes(10, 1));
    let counts = [
        10_000,
        500_000,
        DOUBLING - 2_000,
        DOUBLING + 2_000,
        1_000_000,
    ];
    let totals: Vec<(usize, f64)> = counts.iter().map(|&n| (n, total(&measure(n, 1)))).collect();
    let worst = totals
        .iter()
        .copied()
        .fold((0, 0.0), |w, t| if t.1 > w.1 { t } else { w });
    let (below, above) = (totals[2].1, totals[3].1);
    let two_shards = total(&measure(1_000_000, 2));
    println!(
        "worst {:.1} B at {}; {below:.1} -> {above:.1} across {DOUBLING}; 2 shards at 1,000,000: {two_shards:.1}",
        worst.1, worst.0
    );
    assert!(
        worst.1 <= TABLES_BUDGET && two_shards <= TABLES_BUDGET,
        "the per-connection tables hold {:.1} heap bytes per connection at {} connections \
         ({two_shards:.1} over 2 shards at 1,000,000); the budget is {TABLES_BUDGET}",
        worst.1,
        worst.0
    );
    assert!(
        above - below <= JUMP_BUDGET,
        "the tables grow from {below:.1} to {above:.1} bytes per connection across \
         {DOUBLING} connections (budget: +{JUMP_BUDGET})"
    );
}
