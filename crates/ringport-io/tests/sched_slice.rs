//! `EngineConfig::sched_slice`: every shard thread asks the scheduler for that slice
//! (EEVDF, Linux 6.12+, shown as `se.slice` in `/proc/<pid>/task/<tid>/sched`); without it
//! the shards keep the kernel's default.

mod common;

use std::time::Duration;

use ringport_io::EngineConfig;

/// (thread name, `se.slice` in ns) of every thread of this process.
fn slices() -> Vec<(String, u64)> {
    let mut out = Vec::new();
    for task in std::fs::read_dir("/proc/self/task").unwrap() {
        let dir = task.unwrap().path();
        let Ok(comm) = std::fs::read_to_string(dir.join("comm")) else {
            continue; // the thread ended meanwhile
        };
        let Ok(sched) = std::fs::read_to_string(dir.join("sched")) else {
            continue;
        };
        let slice = sched
            .lines()
            .find(|l| l.starts_with("se.slice"))
            .and_then(|l| l.split(':').nth(1))
            .and_then(|v| v.trim().parse().ok());
        if let Some(slice) = slice {
            out.push((comm.trim().to_owned(), slice));
        }
    }
    out
}

fn shard_slices(cfg: EngineConfig) -> Vec<u64> {
    let (engine, _log, _addr) = common::start_echo(cfg);
    let shards: Vec<u64> = slices()
        .into_iter()
        .filter(|(name, _)| name.starts_with("ringport-shard"))
        .map(|(_, s)| s)
        .collect();
    engine.shutdown();
    common::join_within(engine, common::DEADLINE);
    shards
}

/// Linux 6.12 or later: sched_setattr's sched_runtime sets a normal thread's slice.
fn kernel_has_custom_slices() -> bool {
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap();
    let mut parts = release.trim().split(['.', '-']);
    let major: u32 = parts.next().and_then(|p| p.parse().ok()).unwrap();
    let minor: u32 = parts.next().and_then(|p| p.parse().ok()).unwrap();
    (major, minor) >= (6, 12)
}

#[test]
fn shard_threads_take_the_configured_slice() {
    let default_slice = slices()
        .into_iter()
        .map(|(_, s)| s)
        .next()
        .expect("this kernel shows se.slice");
    let configured = shard_slices(EngineConfig {
        workers: 2,
        sched_slice: Some(Duration::from_micros(250)),
        ..Default::default()
    });
    assert_eq!(configured.len(), 2, "{configured:?}");
    let plain = shard_slices(EngineConfig {
        workers: 2,
        ..Default::default()
    });
    assert_eq!(plain, vec![default_slice; 2]);
    if kernel_has_custom_slices() {
        assert_eq!(configured, vec![250_000; 2]);
    } else {
        // Older kernels ignore the request (and the engine serves all the same).
        assert_eq!(configured, vec![default_slice; 2]);
    }
}
