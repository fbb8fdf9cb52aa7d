//! Steady state allocates nothing per echoed message: this binary counts allocations made on
//! the shard thread while a flag (set and cleared on that thread) is up.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::time::Duration;

use ringport_io::{ConnId, Ctx, Engine, EngineConfig, Handler};

struct Counting;

static ALLOCS: AtomicU64 = AtomicU64::new(0);

thread_local! {
    static COUNTING: Cell<bool> = const { Cell::new(false) };
}

// SAFETY: defers every operation to the system allocator unchanged; the counter and the
// const-initialised thread-local flag never allocate.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        if COUNTING.with(|c| c.get()) {
            ALLOCS.fetch_add(1, Ordering::Relaxed);
        }
        // SAFETY: forwarded contract.
        unsafe { System.alloc(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        // SAFETY: forwarded contract.
        unsafe { System.dealloc(p, l) }
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, new: usize) -> *mut u8 {
        if COUNTING.with(|c| c.get()) {
            ALLOCS.fetch_add(1, Ordering::Relaxed);
        }
        // SAFETY: forwarded contract.
        unsafe { System.realloc(p, l, new) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

struct Echo;

impl Handler for Echo {
    fn on_data(&mut self, ctx: &mut Ctx<'_, Self>, conn: ConnId, data: &[u8]) {
        ctx.send_copy(conn, data).expect("echo queued");
    }
}

/// Round trips of messages of 1..=`max` bytes (varying) on `c`.
fn ping_pong(c: &mut TcpStream, msgs: usize, max: usize, buf: &mut [u8], back: &mut [u8]) {
    for i in 0..msgs {
        let len = 1 + (i * 7919) % max;
        buf[..len].fill(i as u8);
        c.write_all(&buf[..len]).unwrap();
        c.read_exact(&mut back[..len]).unwrap();
        assert_eq!(&back[..len], &buf[..len]);
    }
}

/// Allocations on the shard thread while `msgs` messages are echoed after a warm-up.
fn allocations_while_echoing(msgs: usize) -> u64 {
    let cfg = EngineConfig {
        workers: 1,
        listen: Some("127.0.0.1:0".parse().unwrap()),
        // The peer address lookup is a per-connection cost, not a per-message one.
        resolve_peer_addr: false,
        ..Default::default()
    };
    let engine = Engine::start(cfg, |_, _| Echo).expect("engine");
    let h = engine.handle();
    let mut c = TcpStream::connect(engine.local_addr().unwrap()).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    let (mut buf, mut back) = (vec![0u8; 8192], vec![0u8; 8192]);
    ping_pong(&mut c, 2_000, 8192, &mut buf, &mut back); // warm-up: pools fill

    let (tx, rx) = mpsc::channel();
    let tx2 = tx.clone();
    h.run(0, move |_, _| {
        tx2.send(()).unwrap();
        ALLOCS.store(0, Ordering::Relaxed);
        COUNTING.with(|c| c.set(true)); // last: the send above may allocate
    });
    rx.recv_timeout(Duration::from_secs(60)).unwrap();
    ping_pong(&mut c, msgs, 8192, &mut buf, &mut back);
    h.run(0, move |_, _| {
        COUNTING.with(|c| c.set(false)); // first
        tx.send(()).unwrap();
    });
    rx.recv_timeout(Duration::from_secs(60)).unwrap();
    let n = ALLOCS.load(Ordering::Relaxed);
    drop(c);
    engine.shutdown();
    engine.join().unwrap();
    n
}

#[test]
fn echoing_allocates_nothing_per_message_on_the_shard() {
    let small = allocations_while_echoing(5_000);
    let large = allocations_while_echoing(20_000);
    assert_eq!(
        (small, large),
        (0, 0),
        "allocations on the shard thread while echoing"
    );
}
