// RingportClient with a scripted in-memory WebSocket: backoff and jitter, final close
// reasons, text messages, the default globalThis.WebSocket. No network, no timing luck.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { RingportClient, encodeFrame, decodeAll, CloseReason } from '../index.js';

const WELCOME = {
  type: 'welcome', sessionId: 42n, epoch: 1, inboxTail: 0n, broadcastEpoch: 1, broadcastTail: 0n,
  heartbeatIntervalMs: 30000, maxSleepIntervalMs: 300000, maxPayload: 65536, maxRooms: 64, serverTimeMs: 0n, user: '',
};

/** A fake WebSocket: `script(ws)` decides what happens once it is created. */
function fakeWebSocket(script) {
  const all = [];
  class FakeWebSocket {
    constructor(url, protocol) {
      this.url = url; this.protocol = protocol; this.readyState = 0; this.sent = []; this.closedWith = null;
      all.push(this);
      queueMicrotask(() => script(this, all.length));
    }
    open() { this.readyState = 1; this.onopen?.({}); }
    receive(frame) { this.onmessage?.({ data: encodeFrame(frame).buffer }); }
    drop(code = 1006) { this.readyState = 3; this.onclose?.({ code }); }
    send(b) { this.sent.push(...decodeAll(b)); }
    close(code) { this.closedWith = code; this.readyState = 3; }
  }
  FakeWebSocket.all = all;
  return FakeWebSocket;
}

const tick = () => new Promise((r) => setTimeout(r, 5));
async function until(fn) { for (let i = 0; i < 2000 && !fn(); i++) await tick(); assert.ok(fn()); }

test('reconnect delays grow exponentially up to the cap, with jitter taken off the top', async () => {
  for (const [random, expected] of [[() => 0, [8, 16, 32, 40, 40]], [() => 1, [4, 8, 16, 20, 20]]]) {
    const WS = fakeWebSocket((ws) => ws.drop());
    const c = new RingportClient({ url: 'ws://x/ringport', WebSocket: WS, random, initialBackoffMs: 8, maxBackoffMs: 40, jitter: 0.5 });
    const delays = [];
    c.on('reconnecting', (r) => delays.push(r.delayMs));
    c.connect().catch(() => {});
    await until(() => delays.length >= 5);
    c.close();
    assert.deepEqual(delays.slice(0, 5), expected);
    assert.equal(WS.all[0].protocol, 'ringport.v1');
    assert.equal(WS.all[0].binaryType, 'arraybuffer');
  }
});

test('the backoff starts over after a WELCOME', async () => {
  const WS = fakeWebSocket((ws, n) => {
    if (n === 3) { ws.open(); ws.receive(WELCOME); queueMicrotask(() => ws.drop()); } else if (n === 4) { ws.open(); queueMicrotask(() => ws.drop()); } else ws.drop();
  });
  const c = new RingportClient({ url: 'ws://x', WebSocket: WS, random: () => 0, initialBackoffMs: 2, maxBackoffMs: 1000 });
  const delays = [];
  c.on('reconnecting', (r) => delays.push(r.delayMs));
  await c.connect();
  await until(() => delays.length >= 4);
  c.close();
  assert.deepEqual(delays.slice(0, 4), [2, 4, 2, 4]);
  assert.deepEqual(WS.all[3].sent[0].sessionId, 42n, 'the reconnect resumes the session');
});

test('REPLACED and AUTH_FAILED end the client; GOING_AWAY reconnects', async () => {
  for (const [reason, reconnects] of [[CloseReason.REPLACED, false], [CloseReason.AUTH_FAILED, false], [CloseReason.GOING_AWAY, true]]) {
    const WS = fakeWebSocket((ws, n) => {
      ws.open(); ws.receive(WELCOME);
      if (n === 1) ws.receive({ type: 'close', reason, text: 'bye' });
    });
    const c = new RingportClient({ url: 'ws://x', WebSocket: WS, initialBackoffMs: 1 });
    const closes = [];
    c.on('close', (e) => closes.push(e));
    c.on('error', () => {});
    await c.connect();
    await until(() => closes.length === 1);
    assert.equal(closes[0].reason, reason);
    assert.equal(closes[0].byPeer, true);
    if (reconnects) await until(() => WS.all.length === 2 && c.state === 'active');
    else { await tick(); assert.equal(c.state, 'closed'); assert.equal(WS.all.length, 1); }
    c.close();
  }
});

test('a text message is a protocol error: CLOSE, then reconnect', async () => {
  const WS = fakeWebSocket((ws, n) => { ws.open(); ws.receive(WELCOME); if (n === 1) ws.onmessage({ data: 'hi' }); });
  const c = new RingportClient({ url: 'ws://x', WebSocket: WS, initialBackoffMs: 1 });
  await c.connect();
  await until(() => WS.all.length === 2);
  const close = WS.all[0].sent.at(-1);
  assert.deepEqual([close.type, close.reason], ['close', CloseReason.PROTOCOL_ERROR]);
  assert.equal(WS.all[0].closedWith, 4002);
  c.close();
});

test('requests made before the connection is up are sent after WELCOME', async () => {
  const WS = fakeWebSocket((ws) => { ws.open(); setTimeout(() => ws.receive(WELCOME), 10); });
  const c = new RingportClient({ url: 'ws://x', WebSocket: WS });
  const connected = c.connect();
  const joined = c.join('early');
  const published = c.publish('early', 'x');
  await connected;
  const ws = WS.all[0];
  assert.deepEqual(ws.sent.map((f) => f.type), ['hello', 'join', 'publish']);
  ws.receive({ type: 'roomResult', reqId: ws.sent[1].reqId, status: 0, epoch: 1, tail: 0n });
  ws.receive({ type: 'publishAck', seq: 1n, status: 4 });
  await joined;
  await assert.rejects(published, /RATE_LIMITED/);
  c.close();
  assert.equal(ws.sent.at(-1).type, 'close');
  assert.equal(ws.closedWith, 1000);
});

test('globalThis.WebSocket is the default; none at all is a clear error', () => {
  assert.throws(() => new RingportClient({ url: 'ws://x', WebSocket: undefined }), /no WebSocket/);
  const WS = fakeWebSocket(() => {});
  globalThis.WebSocket = WS;
  try {
    const c = new RingportClient({ url: 'ws://x' });
    assert.equal(c.WebSocket, WS);
  } finally { delete globalThis.WebSocket; }
});

test('a WebSocket that never opens is given up at the handshake deadline and retried', async () => {
  const WS = fakeWebSocket((ws, n) => { if (n === 2) { ws.open(); ws.receive(WELCOME); } });
  const c = new RingportClient({ url: 'ws://x', WebSocket: WS, handshakeTimeoutMs: 20, initialBackoffMs: 1 });
  const errors = [];
  c.on('error', (e) => errors.push(e.message));
  const w = await c.connect();
  assert.equal(w.sessionId, 42n);
  assert.equal(w.resumed, false);
  assert.equal(w.type, undefined);
  assert.equal(WS.all.length, 2);
  assert.equal(WS.all[0].readyState, 3, 'the stuck socket was closed');
  assert.match(errors[0], /did not open within 20 ms/);
  c.close();
});

test('close() while connecting rejects connect()', async () => {
  const WS = fakeWebSocket(() => {});
  const c = new RingportClient({ url: 'ws://x', WebSocket: WS });
  const p = c.connect();
  await tick();
  c.close();
  await assert.rejects(p, /client closed/);
  assert.equal(c.state, 'closed');
});
