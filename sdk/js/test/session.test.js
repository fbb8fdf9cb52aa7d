// ClientSession (sans-IO) with a virtual clock: the client rules of docs/protocol.md.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { ClientSession, encodeFrame, decodeAll, CloseReason, ResumeOutcome, Status } from '../index.js';

const te = new TextEncoder();
const WELCOME = {
  type: 'welcome', sessionId: 0xfedcba9876543210n, epoch: 7, inboxTail: 3n, broadcastEpoch: 9, broadcastTail: 0n,
  heartbeatIntervalMs: 1000, maxSleepIntervalMs: 300000, maxPayload: 65536, maxRooms: 64, serverTimeMs: 0n, user: 'u1',
};

function sent(s) {
  const out = [];
  let b;
  while ((b = s.pollTransmit())) out.push(...decodeAll(b));
  return out;
}
function events(s) {
  const out = [];
  let e;
  while ((e = s.pollEvent())) out.push(e);
  return out;
}
const feed = (s, frames, now = 0) => s.handleMessage(new Uint8Array(frames.flatMap((f) => [...encodeFrame(f)])), now);
const push = (stream, epoch, offset, text = 'x') => ({ type: 'push', stream, epoch, offset, payload: te.encode(text), urgent: false });

function welcomed() {
  const s = new ClientSession({ token: 'tok' });
  s.connect(0);
  sent(s);
  feed(s, [WELCOME]);
  events(s);
  sent(s);
  return s;
}

function joined(room = 'r', epoch = 5, tail = 10n) {
  const s = welcomed();
  const id = s.join(room, 0);
  assert.deepEqual(sent(s), [{ type: 'join', reqId: id, room }]);
  feed(s, [{ type: 'roomResult', reqId: id, status: 0, epoch, tail }]);
  assert.deepEqual(events(s), [{ type: 'roomResult', reqId: id, status: 0, room }]);
  return s;
}

/** Connects `s` and checks its HELLO resumes WELCOME's session: room:* at 0, room:r at `rOffset`, the inbox at 4. */
function expectResumeHello(s, now, rOffset) {
  s.connect(now);
  const [hello] = sent(s);
  assert.equal(hello.sessionId, 0xfedcba9876543210n);
  assert.deepEqual(hello.resume, [
    { stream: 'room:*', epoch: 9, lastOffset: 0n },
    { stream: 'room:r', epoch: 5, lastOffset: rOffset },
    { stream: 'user:u1', epoch: 7, lastOffset: 4n },
  ]);
}

test('first HELLO is a new session with the token and no resume entries', () => {
  const s = new ClientSession({ token: 'tok', clientInfo: 'x' });
  s.connect(0);
  assert.equal(s.state, 'handshaking');
  const [hello] = sent(s);
  assert.deepEqual(hello, { type: 'hello', token: te.encode('tok'), clientInfo: 'x', sessionId: 0n, resume: [] });
  feed(s, [WELCOME]);
  assert.equal(s.state, 'active');
  const [w] = events(s);
  assert.equal(w.type, 'welcome');
  assert.equal(w.resumed, false);
  assert.equal(s.sessionId, 0xfedcba9876543210n);
  assert.deepEqual(sent(s), [], 'WELCOME\'s inbox tail is never ACKed');
});

test('pushes are deduplicated per stream by (epoch, offset)', () => {
  const s = joined();
  feed(s, [push('room:r', 5, 11n), push('room:r', 5, 11n), push('room:r', 5, 10n), push('room:r', 5, 12n)]);
  const ev = events(s);
  assert.deepEqual(ev.filter((e) => e.type === 'message').map((e) => e.push.offset), [11n, 12n]);
  assert.equal(ev.filter((e) => e.type === 'duplicate').length, 2);
});

test('an unannounced jump is reported as a loss before the message', () => {
  const s = joined();
  feed(s, [push('room:r', 5, 11n), push('room:r', 5, 15n)]);
  const ev = events(s).map((e) => e.type === 'loss' ? ['loss', e.loss.reason, e.loss.from, e.loss.to] : [e.type, e.push.offset]);
  assert.deepEqual(ev, [['message', 11n], ['loss', 'gap', 12n, 15n], ['message', 15n]]);
});

test('the inbox is ACKed cumulatively once per batch, only for what arrived', () => {
  const s = welcomed();
  feed(s, [push('user:u1', 7, 4n), push('user:u1', 7, 5n)]);
  assert.deepEqual(sent(s), [{ type: 'ack', stream: 'user:u1', offset: 5n }]);
  feed(s, [push('user:u1', 7, 5n)]);
  assert.deepEqual(sent(s), [], 'a duplicate changes nothing');
  feed(s, [push('room:*', 9, 1n)]);
  assert.deepEqual(sent(s), [], 'room streams are never ACKed');
});

test('reconnect resumes the session and every stream from the last offset received', () => {
  const s = joined('r', 5, 10n);
  feed(s, [push('room:r', 5, 12n), push('user:u1', 7, 4n)]);
  events(s); sent(s);
  s.transportClosed('gone');
  assert.deepEqual(events(s).map((e) => [e.type, e.reason]), [['closed', CloseReason.CONNECTION_LOST]]);
  assert.equal(s.state, 'disconnected');
  expectResumeHello(s, 100, 12n);
  feed(s, [WELCOME, { type: 'resumeResult', stream: 'room:r', outcome: ResumeOutcome.RESUMED, status: 0, oldEpoch: 5, newEpoch: 5, missingFrom: 0n, missingTo: 0n },
    push('room:r', 5, 12n), push('room:r', 5, 13n)], 100);
  const ev = events(s);
  assert.equal(ev[0].type, 'welcome');
  assert.equal(ev[0].resumed, true);
  assert.deepEqual(ev.filter((e) => e.type === 'message').map((e) => e.push.offset), [13n]);
  assert.deepEqual(sent(s), [{ type: 'ack', stream: 'user:u1', offset: 4n }],
    'a resumed room is not joined again; the inbox is ACKed again on the new connection');
});

test('RESUME_RESULT GAP, EPOCH_CHANGED and REFUSED are reported as losses', () => {
  const s = joined('r', 5, 10n);
  s.join('q', 0); const [j] = sent(s);
  feed(s, [{ type: 'roomResult', reqId: j.reqId, status: 0, epoch: 1, tail: 0n }]);
  s.transportClosed('gone'); events(s);
  s.connect(0); sent(s);
  feed(s, [WELCOME,
    { type: 'resumeResult', stream: 'room:q', outcome: ResumeOutcome.REFUSED, status: Status.FORBIDDEN, oldEpoch: 1, newEpoch: 1, missingFrom: 0n, missingTo: 0n },
    { type: 'resumeResult', stream: 'room:r', outcome: ResumeOutcome.GAP, status: 0, oldEpoch: 5, newEpoch: 5, missingFrom: 11n, missingTo: 20n },
    { type: 'resumeResult', stream: 'user:u1', outcome: ResumeOutcome.EPOCH_CHANGED, status: 0, oldEpoch: 7, newEpoch: 8, missingFrom: 1n, missingTo: 3n },
    push('room:r', 5, 20n), push('user:u1', 8, 3n)]);
  const all = events(s);
  // Every RESUME_RESULT is an event of its own (the page shows each stream's outcome).
  assert.deepEqual(all.filter((e) => e.type === 'resumeResult').map((e) => [e.result.stream, e.result.outcome]), [
    ['room:q', ResumeOutcome.REFUSED], ['room:r', ResumeOutcome.GAP], ['user:u1', ResumeOutcome.EPOCH_CHANGED],
  ]);
  const ev = all.filter((e) => e.type !== 'welcome' && e.type !== 'resumeResult');
  assert.deepEqual(ev.map((e) => e.type === 'loss' ? [e.loss.stream, e.loss.reason, e.loss.epoch, e.loss.from, e.loss.to] : [e.type, e.stream ?? e.push.stream]), [
    ['resumeRefused', 'room:q'],
    ['room:r', 'gap', 5, 11n, 20n],
    ['user:u1', 'epochChanged', 8, 1n, 3n],
    ['message', 'room:r'],
    ['message', 'user:u1'],
  ]);
  assert.deepEqual([...s.rooms], ['r']);
});

test('rooms resume does not cover are joined again, and requests in flight are resent', () => {
  const s = welcomed();
  const id = s.join('a', 0); sent(s);
  s.transportClosed('gone'); events(s);
  s.connect(0);
  assert.deepEqual(sent(s)[0].resume.map((e) => e.stream), ['room:*', 'user:u1']);
  feed(s, [WELCOME]);
  assert.deepEqual(sent(s), [{ type: 'join', reqId: id, room: 'a' }]);
});

test('heartbeat duty: PING after an interval without sending, dead after 3 silent intervals', () => {
  const s = welcomed();
  assert.equal(s.pollTimeout(), 1000);
  s.handleTimeout(999);
  assert.deepEqual(sent(s), []);
  s.handleTimeout(1000);
  assert.deepEqual(sent(s), [{ type: 'ping', nonce: 1000n }]);
  feed(s, [{ type: 'ping', nonce: 77n }], 1500);
  assert.deepEqual(sent(s), [{ type: 'pong', nonce: 77n }], 'a server PING is answered');
  s.handleTimeout(2500); sent(s);
  s.handleTimeout(3500); sent(s);
  assert.equal(s.pollTimeout(), 4500);
  s.handleTimeout(4500);
  assert.deepEqual(events(s).map((e) => [e.type, e.reason]), [['closed', CloseReason.HEARTBEAT_TIMEOUT]]);
  assert.equal(s.pollTimeout(), null);
});

test('handshake deadline and frames before WELCOME', () => {
  const s = new ClientSession({ handshakeTimeoutMs: 500 });
  s.connect(0); sent(s);
  s.handleTimeout(500);
  assert.deepEqual(events(s).map((e) => [e.type, e.reason]), [['closed', CloseReason.HANDSHAKE_TIMEOUT]]);
  s.connect(1000); sent(s);
  feed(s, [push('room:r', 1, 1n)], 1000);
  const [close] = sent(s);
  assert.equal(close.type, 'close');
  assert.equal(close.reason, CloseReason.PROTOCOL_ERROR);
  assert.equal(s.state, 'disconnected');
});

test('a malformed server frame closes with its reason', () => {
  const s = welcomed();
  s.handleMessage(Uint8Array.of(1, 0x13, 0, 0, 0, 0, 0, 0), 0);
  assert.equal(sent(s)[0].reason, CloseReason.PROTOCOL_ERROR);
  const t = welcomed();
  feed(t, [{ type: 'join', reqId: 1, room: 'x' }]);
  assert.match(sent(t)[0].text, /unexpected JOIN/);
});

test('sleep/wake: granted interval, WAKE_ACK runs reported once, jumps while asleep', () => {
  const s = joined('r', 5, 10n);
  assert.equal(s.sleep(120000, 0), true);
  assert.deepEqual(sent(s), [{ type: 'sleep', intervalMs: 120000 }]);
  feed(s, [{ type: 'sleepAck', intervalMs: 120000 }]);
  assert.equal(s.state, 'sleeping');
  assert.equal(s.pollTimeout(), 120000);
  // An urgent message ended a skipped run 11..14: a jump, reported as skipped while asleep.
  feed(s, [push('room:r', 5, 15n)]);
  assert.deepEqual(events(s).slice(1).map((e) => e.type === 'loss' ? [e.loss.reason, e.loss.from, e.loss.to] : e.type),
    [['skippedWhileAsleep', 11n, 15n], 'message']);
  s.wake(0);
  assert.deepEqual(sent(s), [{ type: 'wake' }]);
  feed(s, [{ type: 'wakeAck', skipped: [
    { stream: 'room:r', resumeFrom: 11n, count: 4 },
    { stream: 'room:r', resumeFrom: 16n, count: 3 }] }, push('room:r', 5, 19n)]);
  const ev = events(s);
  assert.deepEqual(ev.map((e) => e.type === 'loss' ? [e.loss.reason, e.loss.from, e.loss.to] : e.type),
    [['skippedWhileAsleep', 16n, 19n], 'wakeAck', 'message'], 'the run already seen as a jump is not reported again; the announced one is not reported twice');
  assert.equal(s.state, 'active');
  assert.equal(s.pollTimeout(), 1000);
});

test('publish: sent only when established, checked against max_payload', () => {
  const s = new ClientSession();
  assert.equal(s.publish('r', 1n, te.encode('hi'), 0), false);
  s.connect(0); sent(s);
  feed(s, [{ ...WELCOME, maxPayload: 100 }]);
  assert.equal(s.publish('r', 1n, te.encode('hi'), 0), true);
  assert.deepEqual(sent(s), [{ type: 'publish', room: 'r', seq: 1n, payload: te.encode('hi') }]);
  assert.throws(() => s.publish('r', 2n, new Uint8Array(100), 0), RangeError);
});

test('snapshot and restore: the next HELLO resumes the session, rooms and positions; bad snapshots change nothing', () => {
  const s = joined('r', 5, 10n);
  feed(s, [push('room:r', 5, 11n), push('user:u1', 7, 4n)]);
  events(s);
  const snap = JSON.parse(JSON.stringify(s.snapshot()));
  assert.equal(snap.sessionId, String(0xfedcba9876543210n));
  assert.deepEqual(snap.rooms, ['r']);
  const t = new ClientSession({ token: 'tok' });
  for (const bad of [null, {}, { ...snap, sessionId: '-1' }, { ...snap, streams: [{ stream: 'room:r', epoch: 1.5, offset: '1' }] }, { ...snap, rooms: [''] }]) {
    assert.throws(() => t.restore(bad));
  }
  assert.equal(t.sessionId, 0n, 'a refused snapshot changes nothing');
  t.restore(snap);
  expectResumeHello(t, 0, 11n);
  feed(t, [WELCOME, { type: 'resumeResult', stream: 'room:r', outcome: ResumeOutcome.RESUMED, status: 0, oldEpoch: 5, newEpoch: 5, missingFrom: 0n, missingTo: 0n }, push('room:r', 5, 11n), push('room:r', 5, 12n)]);
  const ev = events(t);
  assert.equal(ev[0].resumed, true);
  assert.equal(ev[1].type, 'resumeResult');
  assert.deepEqual(ev.slice(2).map((e) => [e.type, e.push?.offset]), [['duplicate', 11n], ['message', 12n]]);
  assert.deepEqual(sent(t).filter((f) => f.type === 'join'), [], 'a resumed room is not joined again');
  assert.throws(() => t.restore(snap), /before connect/);
});
