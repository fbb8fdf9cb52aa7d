// Test helpers: a real ringport gateway (target/release/ringport serve) on free loopback
// ports, HS256 tokens minted with node:crypto, the admin HTTP API, and a WebSocket class
// (the `ws` devDependency) that records and can tamper with what the SDK sends.
import { spawn } from 'node:child_process';
import { createHmac } from 'node:crypto';
import { createServer } from 'node:net';
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import WebSocket from 'ws';
import { decodeAll } from '../index.js';

export const SECRET = '0123456789abcdef0123456789abcdef';
const ROOT = fileURLToPath(new URL('../../../', import.meta.url));
export const BINARY = process.env.RINGPORT_BIN ?? `${ROOT}target/release/ringport`;

/** Generous: the test machine is small and busy. */
export const WAIT_MS = 20000;

function b64url(s) { return Buffer.from(s).toString('base64url'); }

/** An HS256 token with the gateway's claims: sub, exp, rooms (crates/ringport/src/auth.rs). */
export function token(user, rooms = ['*']) {
  const header = b64url(JSON.stringify({ alg: 'HS256', typ: 'JWT' }));
  const claims = b64url(JSON.stringify({ sub: user, exp: Math.floor(Date.now() / 1000) + 3600, rooms }));
  const sig = createHmac('sha256', SECRET).update(`${header}.${claims}`).digest('base64url');
  return `${header}.${claims}.${sig}`;
}

async function freePort() {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.on('error', reject);
    s.listen(0, '127.0.0.1', () => { const { port } = s.address(); s.close(() => resolve(port)); });
  });
}

/** Polls `fn` until it returns a truthy value or `ms` pass. */
export async function until(fn, what, ms = WAIT_MS) {
  const end = Date.now() + ms;
  for (;;) {
    const v = await fn();
    if (v) return v;
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

export class Gateway {
  static async start(env = {}) {
    if (!existsSync(BINARY)) throw new Error(`${BINARY} missing: nice -n 19 cargo build --release -p ringport`);
    const g = new Gateway();
    g.port = await freePort();
    g.adminPort = await freePort();
    g.env = {
      ...process.env,
      RINGPORT_AUTH_SECRET: SECRET,
      RINGPORT_SERVER__LISTEN: `127.0.0.1:${g.port}`,
      RINGPORT_ADMIN__LISTEN: `127.0.0.1:${g.adminPort}`,
      RINGPORT_SERVER__WORKERS: '2',
      RINGPORT_ENGINE__RECV_BUFFERS: '256',
      RINGPORT_ENGINE__RING_ENTRIES: '1024',
      RINGPORT_ENGINE__MAX_CONNECTIONS_PER_SHARD: '1024',
      RINGPORT_ENGINE__SHUTDOWN_TIMEOUT_MS: '1000',
      RUST_LOG: 'warn',
      ...env,
    };
    await g.spawn();
    return g;
  }

  get url() { return `ws://127.0.0.1:${this.port}/ringport`; }

  async spawn() {
    this.stderr = '';
    this.proc = spawn(BINARY, ['serve'], { env: this.env, stdio: ['ignore', 'ignore', 'pipe'] });
    this.proc.stderr.on('data', (d) => { this.stderr += d; });
    const exited = new Promise((resolve) => this.proc.once('exit', (code) => resolve(code)));
    this.exited = exited;
    await until(async () => {
      if (this.proc.exitCode !== null) throw new Error(`ringport exited ${this.proc.exitCode}: ${this.stderr}`);
      try { return (await fetch(`http://127.0.0.1:${this.adminPort}/metrics`)).ok; } catch { return false; }
    }, 'the gateway to listen');
  }

  /** Stops the process (SIGTERM, then SIGKILL) and waits for it. */
  async stop() {
    if (!this.proc || this.proc.exitCode !== null) return;
    this.proc.kill('SIGTERM');
    const t = setTimeout(() => this.proc.kill('SIGKILL'), 10000);
    await this.exited;
    clearTimeout(t);
  }

  async restart() { await this.stop(); await this.spawn(); }

  async http(method, path, body) {
    const res = await fetch(`http://127.0.0.1:${this.adminPort}${path}`, {
      method, headers: body ? { 'content-type': 'application/json' } : {}, body: body ? JSON.stringify(body) : undefined,
    });
    const text = await res.text();
    if (!res.ok) throw new Error(`${method} ${path}: ${res.status} ${text}`);
    return text ? JSON.parse(text) : null;
  }

  /** POST /v1/push/room/{room}: its {stream, epoch, offset}. */
  pushRoom(room, payload, urgent = false) {
    return this.http('POST', `/v1/push/room/${encodeURIComponent(room)}`, { payload, urgent });
  }

  pushUser(user, payload) { return this.http('POST', `/v1/push/user/${encodeURIComponent(user)}`, { payload }); }
}

/**
 * A WebSocket class for the SDK's `WebSocket` option: `ws` underneath, every sent frame
 * decoded into `sent`, frames of a type in `drop` not sent, `instances` to kill sockets.
 */
export function recordingWebSocket() {
  const rec = { sent: [], drop: new Set(), instances: [] };
  class RecordingWebSocket extends WebSocket {
    constructor(url, protocols) {
      super(url, protocols);
      rec.instances.push(this);
    }
    send(data) {
      const frames = decodeAll(data, 1 << 20);
      rec.sent.push(...frames);
      if (frames.every((f) => rec.drop.has(f.type))) return;
      super.send(data);
    }
  }
  rec.WebSocket = RecordingWebSocket;
  /** Kills the current socket without a closing handshake (a dead network). */
  rec.kill = () => rec.instances.at(-1).terminate();
  return rec;
}

/** Collects a client's events. */
export function collect(client) {
  const c = { messages: [], losses: [], states: [], errors: [], duplicates: [], welcomes: [], wakes: [], sleeps: [], resumes: [] };
  client.on('message', (m) => c.messages.push(m));
  client.on('loss', (l) => c.losses.push(l));
  client.on('state', (s) => c.states.push(s));
  client.on('error', (e) => c.errors.push(e));
  client.on('duplicate', (d) => c.duplicates.push(d));
  client.on('welcome', (w) => c.welcomes.push(w));
  client.on('wake', (w) => c.wakes.push(w));
  client.on('sleep', (s) => c.sleeps.push(s));
  client.on('resume', (r) => c.resumes.push(r));
  c.texts = (stream) => c.messages.filter((m) => !stream || m.stream === stream).map((m) => m.text);
  return c;
}
