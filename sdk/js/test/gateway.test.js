// The SDK against a real gateway over WebSocket.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { RingportClient } from '../index.js';
import { Gateway, token, recordingWebSocket, collect, until } from './gateway.js';

let gw;
const clients = [];
before(async () => {
  gw = await Gateway.start({ RINGPORT_PROTOCOL__SLEEP_HOLDBACK: '4' });
});
after(async () => {
  for (const c of clients) c.close();
  await gw?.stop();
});

function client(user, extra = {}) {
  const rec = recordingWebSocket();
  const c = new RingportClient({
    url: gw.url, token: user ? token(user) : '', WebSocket: rec.WebSocket, initialBackoffMs: 50, maxBackoffMs: 500, ...extra,
  });
  clients.push(c);
  return { c, rec, ev: collect(c) };
}

test('connect: HELLO with the token, WELCOME with session id and user', async () => {
  const { c, rec, ev } = client('alice');
  const tok = c.options.token;
  const w = await c.connect();
  assert.equal(typeof w.sessionId, 'bigint');
  assert.notEqual(w.sessionId, 0n);
  assert.equal(w.user, 'alice');
  assert.equal(w.resumed, false);
  assert.equal(c.state, 'active');
  assert.deepEqual(ev.states, ['connecting', 'handshaking', 'active']);
  assert.equal(rec.sent[0].type, 'hello');
  assert.equal(new TextDecoder().decode(rec.sent[0].token), tok);
  assert.equal(rec.sent[0].sessionId, 0n);
  c.close();
  assert.equal(c.state, 'closed');
});

test('a bad token is refused: AUTH_FAILED, no reconnect', async () => {
  const { c, ev } = client(null, { token: 'not-a-jwt' });
  await assert.rejects(c.connect(), /AUTH_FAILED/);
  assert.equal(c.state, 'closed');
  assert.ok(ev.errors.some((e) => /AUTH_FAILED/.test(e.message)));
});

test('join, then a push through the HTTP API arrives', async () => {
  const { c, ev } = client('bob');
  await c.connect();
  await c.join('news');
  assert.deepEqual([...c.rooms], ['news']);
  const pushed = await gw.pushRoom('news', 'headline');
  await until(() => ev.messages.length === 1, 'the push');
  const m = ev.messages[0];
  assert.equal(m.stream, 'room:news');
  assert.equal(m.room, 'news');
  assert.equal(m.text, 'headline');
  assert.equal(typeof m.offset, 'bigint');
  assert.equal(m.offset, BigInt(pushed.offset));
  assert.equal(m.epoch, Number(pushed.epoch));
  await c.leave('news');
  assert.deepEqual([...c.rooms], []);
  await gw.pushRoom('news', 'after leave');
  await assert.rejects(c.publish('news', 'x'), /NOT_JOINED/);
  assert.deepEqual(ev.texts(), ['headline']);
});

test('publish with seq: PUBLISH_ACK, and the publisher receives its own message', async () => {
  const { c, rec, ev } = client('carol');
  const other = client('dave');
  await c.connect(); await other.c.connect();
  await c.join('chat'); await other.c.join('chat');
  const a1 = await c.publish('chat', 'one');
  const a2 = await c.publish('chat', new TextEncoder().encode('two'));
  assert.deepEqual([a1.seq, a2.seq], [1n, 2n]);
  assert.deepEqual(rec.sent.filter((f) => f.type === 'publish').map((f) => f.seq), [1n, 2n]);
  await until(() => ev.messages.length === 2 && other.ev.messages.length === 2, 'both copies');
  assert.deepEqual(ev.texts('room:chat'), ['one', 'two']);
  assert.deepEqual(other.ev.texts('room:chat'), ['one', 'two']);
});

test('the user inbox is ACKed: the server records it and does not redeliver on resume', async () => {
  const { c, rec, ev } = client('erin');
  await c.connect();
  await gw.pushUser('erin', 'm1');
  const last = await gw.pushUser('erin', 'm2');
  await until(() => ev.messages.length === 2, 'the inbox messages');
  assert.deepEqual(ev.texts('user:erin'), ['m1', 'm2']);
  await until(() => rec.sent.some((f) => f.type === 'ack' && f.offset === BigInt(last.offset)), 'the ACK');
  const receipts = await until(async () => {
    const r = await gw.http('GET', '/v1/users/erin/receipts');
    return BigInt(r.acked_offset) === BigInt(last.offset) && r;
  }, 'the receipt');
  assert.equal(BigInt(receipts.tail), BigInt(last.offset));
  const welcomes = ev.welcomes.length;
  rec.kill();
  await until(() => ev.welcomes.length > welcomes, 'the reconnect');
  await gw.pushUser('erin', 'm3');
  await until(() => ev.messages.length === 3, 'm3');
  assert.deepEqual(ev.texts('user:erin'), ['m1', 'm2', 'm3']);
  assert.equal(ev.duplicates.length, 0, 'acknowledged messages are not redelivered');
  assert.equal(ev.welcomes.at(-1).resumed, true);
});

test('reconnect with resume: nothing missed while away, no duplicates though the server redelivers', async () => {
  const { c, rec, ev } = client('frank', { initialBackoffMs: 400 });
  await c.connect();
  await c.join('live');
  // ACKs are lost on the way: the server keeps the inbox messages unacknowledged and
  // redelivers them on resume; the SDK must drop them by (epoch, offset).
  rec.drop.add('ack');
  await gw.pushRoom('live', 'r1'); await gw.pushUser('frank', 'u1');
  await until(() => ev.messages.length === 2, 'r1 and u1');
  const sessionId = c.sessionId;
  rec.kill();
  await until(() => c.state !== 'active', 'the client to notice');
  // Sent while the client is away (its reconnect waits at least 200 ms).
  await gw.pushRoom('live', 'r2'); await gw.pushRoom('live', 'r3'); await gw.pushUser('frank', 'u2');
  await until(() => ev.messages.length === 5, 'the replay');
  rec.drop.clear();
  await gw.pushRoom('live', 'r4');
  await until(() => ev.messages.length === 6, 'live traffic after resume');
  assert.equal(c.sessionId, sessionId, 'the session was resumed');
  assert.deepEqual(ev.texts('room:live'), ['r1', 'r2', 'r3', 'r4']);
  assert.deepEqual(ev.texts('user:frank'), ['u1', 'u2']);
  assert.ok(ev.duplicates.some((d) => d.push.stream === 'user:frank'), 'the server did redeliver the unacknowledged inbox message');
  assert.deepEqual(ev.losses, []);
  const hello = rec.sent.filter((f) => f.type === 'hello')[1];
  assert.equal(hello.sessionId, sessionId);
  assert.deepEqual(hello.resume.map((e) => e.stream), ['room:*', 'room:live', 'user:frank']);
  assert.ok(ev.states.includes('disconnected'));
});

test('a publish in flight when the socket dies is resent with the same seq and published once', async () => {
  const { c, rec, ev } = client('gina', { initialBackoffMs: 200 });
  await c.connect();
  await c.join('once');
  rec.drop.add('publish');
  const p = c.publish('once', 'hello');
  await until(() => rec.sent.some((f) => f.type === 'publish'), 'the publish attempt');
  rec.kill();
  rec.drop.clear();
  const ack = await p;
  assert.equal(ack.seq, 1n);
  await until(() => ev.messages.length === 1, 'the message');
  assert.deepEqual(rec.sent.filter((f) => f.type === 'publish').map((f) => f.seq), [1n, 1n]);
  assert.deepEqual(ev.texts(), ['hello']);
});

test('a silent socket is detected by the heartbeat and the client resumes', async () => {
  const { c, rec, ev } = client('hank', { heartbeatCapMs: 300, deadAfterIntervals: 3 });
  await c.connect();
  await c.join('hb');
  await until(() => rec.sent.some((f) => f.type === 'ping'), 'a PING from the heartbeat duty');
  // Stop reading: the server's answers no longer reach the client.
  const ws = rec.instances.at(-1);
  ws.removeAllListeners?.('message');
  ws.onmessage = null;
  ws._socket.pause();
  await until(() => ev.welcomes.length === 2, 'the reconnect after the heartbeat deadline');
  await gw.pushRoom('hb', 'still here');
  await until(() => ev.texts('room:hb').length === 1, 'delivery after resume');
});

test('sleep on visibilitychange (hidden), wake on return: held messages delivered, skipped ones reported', async () => {
  const doc = new EventTarget();
  doc.visibilityState = 'visible';
  const { c, rec, ev } = client('ivy', { document: doc });
  await c.connect();
  await c.join('tv');
  await gw.pushRoom('tv', 'before');
  await until(() => ev.messages.length === 1, 'before');
  doc.visibilityState = 'hidden';
  doc.dispatchEvent(new Event('visibilitychange'));
  await until(() => c.state === 'sleeping', 'SLEEP_ACK');
  assert.equal(rec.sent.filter((f) => f.type === 'sleep').length, 1);
  assert.ok(ev.sleeps[0].intervalMs >= 30000);
  const offsets = [];
  for (let i = 0; i < 10; i++) offsets.push(BigInt((await gw.pushRoom('tv', `s${i}`)).offset));
  await gw.pushUser('ivy', 'inbox while asleep');
  await until(() => ev.texts('user:ivy').length === 1, 'inbox delivered at once while asleep');
  assert.deepEqual(ev.texts('room:tv'), ['before'], 'room messages are held while asleep');
  doc.visibilityState = 'visible';
  doc.dispatchEvent(new Event('visibilitychange'));
  await until(() => c.state === 'active' && ev.wakes.length === 1, 'WAKE_ACK');
  await until(() => ev.texts('room:tv').length === 5, 'the held messages');
  assert.deepEqual(ev.texts('room:tv'), ['before', 's0', 's1', 's2', 's3']);
  assert.equal(ev.losses.length, 1);
  const loss = ev.losses[0];
  assert.deepEqual([loss.stream, loss.reason, loss.from, loss.to], ['room:tv', 'skippedWhileAsleep', offsets[4], offsets[9] + 1n]);
  // The stream continues after the reported hole without another loss.
  await gw.pushRoom('tv', 'after');
  await until(() => ev.texts('room:tv').length === 6, 'after');
  assert.equal(ev.losses.length, 1);
});

test('a gateway restart: the client reconnects and reports the lost history as losses', async () => {
  const { c, ev } = client('jack', { initialBackoffMs: 100, maxBackoffMs: 400 });
  await c.connect();
  await c.join('restart');
  await gw.pushRoom('restart', 'old');
  await until(() => ev.messages.length === 1, 'old');
  const before = c.sessionId;
  await gw.restart();
  await until(() => ev.welcomes.length === 2, 'the reconnect to the new process');
  assert.notEqual(c.sessionId, before, 'a new process issues a new session');
  await until(() => ev.losses.some((l) => l.stream === 'room:restart'), 'the room loss');
  const l = ev.losses.find((x) => x.stream === 'room:restart');
  assert.equal(l.reason, 'epochChanged');
  assert.deepEqual([...c.rooms], ['restart'], 'still a member after the restart');
  await gw.pushRoom('restart', 'new');
  await until(() => ev.texts('room:restart').length === 2, 'new');
  assert.deepEqual(ev.texts('room:restart'), ['old', 'new']);
});

/** A connected client of `user` in `room` that has received the one message `send` caused. */
async function inRoomWithOne(user, room, send) {
  const made = client(user);
  await made.c.connect();
  await made.c.join(room);
  await send(made.c, room);
  await until(() => made.ev.messages.length === 1, `the first message in ${room}`);
  return made;
}

test('a snapshot continues the session in a new client (a page reload): replay, no re-JOIN, seqs go on', async () => {
  const { c } = await inRoomWithOne('lena', 'reload', (cl, room) => cl.publish(room, 'p1'));
  // What the demo page keeps in sessionStorage: JSON, u64 values as strings.
  const saved = JSON.stringify(c.snapshot());
  const sessionId = c.sessionId;
  c.close();
  await gw.pushRoom('reload', 'while away 1');
  await gw.pushRoom('reload', 'while away 2');
  const next = client('lena', { resume: JSON.parse(saved) });
  const w = await next.c.connect();
  assert.equal(w.resumed, true, 'the server kept the session for the same user');
  assert.equal(next.c.sessionId, sessionId);
  await until(() => next.ev.messages.length === 2, 'the replay');
  assert.deepEqual(next.ev.texts('room:reload'), ['while away 1', 'while away 2']);
  assert.deepEqual(next.ev.resumes.find((r) => r.stream === 'room:reload')?.outcome, 'resumed');
  assert.deepEqual(next.ev.losses, []);
  const hello = next.rec.sent[0];
  assert.equal(hello.sessionId, sessionId);
  assert.ok(hello.resume.some((e) => e.stream === 'room:reload'));
  assert.ok(!next.rec.sent.some((f) => f.type === 'join'), 'the room is resumed, not joined again');
  // The publish seq goes on from the snapshot: seq 1 again would be acknowledged as a
  // duplicate of the first page's publish and never delivered.
  const ack = await next.c.publish('reload', 'p2');
  assert.equal(ack.seq, 2n);
  await until(() => next.ev.texts('room:reload').includes('p2'), 'p2 delivered');
});

test('a snapshot from another user is resumed by offset in a new session', async () => {
  const { c } = await inRoomWithOne('mona', 'handover', (_cl, room) => gw.pushRoom(room, 'm1'));
  const snap = c.snapshot();
  c.close();
  const other = client('nick', { resume: snap });
  const w = await other.c.connect();
  assert.equal(w.resumed, false, 'a session is resumed for its own user only');
  await until(() => other.ev.resumes.length >= 2, 'the resume results');
  const byStream = Object.fromEntries(other.ev.resumes.map((r) => [r.stream, r.outcome]));
  assert.equal(byStream['room:handover'], 'resumed');
  assert.equal(byStream['user:mona'], 'refused', 'another user\'s inbox');
  await gw.pushRoom('handover', 'm2');
  await until(() => other.ev.texts('room:handover').length === 1, 'm2');
});

test('the broadcast stream room:* arrives without joining and is resumed across a reconnect', async () => {
  const { c, rec, ev } = client('kate', { initialBackoffMs: 400 });
  await c.connect();
  await gw.http('POST', '/v1/broadcast', { payload: 'b1' });
  await until(() => ev.texts('room:*').length === 1, 'b1');
  rec.kill();
  await until(() => c.state !== 'active', 'the client to notice');
  await gw.http('POST', '/v1/broadcast', { payload: 'b2' });
  await until(() => ev.welcomes.length === 2, 'the reconnect');
  await gw.http('POST', '/v1/broadcast', { payload: 'b3' });
  await until(() => ev.texts('room:*').length === 3, 'b2 replayed and b3 live');
  assert.deepEqual(ev.texts('room:*'), ['b1', 'b2', 'b3']);
  assert.equal(ev.messages[0].room, '*');
  assert.deepEqual(ev.losses, []);
});
