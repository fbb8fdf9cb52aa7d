//! A raw byte echo server on the ringport-io engine.
//!
//! ```text
//! cargo run --release -p ringport-io --example echo -- 127.0.0.1:7000 [workers]
//! ```
//! Then `nc 127.0.0.1 7000`, or any echo load tool.

use ringport_io::{CloseReason, ConnId, Ctx, Engine, EngineConfig, Handler, Origin};

/// One per shard; needs no per-connection state at all.
struct Echo;

impl Handler for Echo {
    fn on_open(&mut self, _ctx: &mut Ctx<'_, Self>, _conn: ConnId, _origin: Origin) {}

    fn on_data(&mut self, ctx: &mut Ctx<'_, Self>, conn: ConnId, data: &[u8]) {
        // The bytes are borrowed from the receive buffer ring: send_copy copies them into the
        // shard's pooled send blocks, and they leave with one sendmsg when the loop turns.
        if ctx.send_copy(conn, data).is_err() {
            ctx.abort(conn, CloseReason::SlowConsumer);
        }
    }

    fn on_close(&mut self, _ctx: &mut Ctx<'_, Self>, _conn: ConnId, _reason: CloseReason) {}
}

fn main() {
    let mut args = std::env::args().skip(1);
    let listen = args.next().unwrap_or_else(|| "127.0.0.1:7000".into());
    let workers = args.next().and_then(|w| w.parse().ok()).unwrap_or(1);
    let cfg = EngineConfig {
        listen: Some(listen.parse().expect("listen address like 127.0.0.1:7000")),
        workers,
        ..EngineConfig::default()
    };
    let engine = match Engine::start(cfg, |_shard, _handle| Echo) {
        Ok(e) => e,
        Err(e) => {
            eprintln!("error: {e}");
            std::process::exit(1);
        }
    };
    println!(
        "echo listening on {}",
        engine.local_addr().expect("listener")
    );
    engine.join().expect("shards exit cleanly");
}
