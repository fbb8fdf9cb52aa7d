// The codec against the byte examples of docs/protocol.md (read from the document itself,
// as crates/ringport/tests/conformance.rs does), plus the error rules of section 1.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import {
  encodeFrame, decodeFrame, decodeAll, ProtocolError, CloseReason, ResumeOutcome, Status,
} from '../index.js';

const te = new TextEncoder();
const b = (s) => te.encode(s);
const doc = readFileSync(fileURLToPath(new URL('../../../docs/protocol.md', import.meta.url)), 'utf8');
const blocks = [...doc.matchAll(/```hex\n([\s\S]*?)```/g)].map((m) =>
  Uint8Array.from(m[1].trim().split(/\s+/).map((h) => parseInt(h, 16))));

// In the order the examples appear in docs/protocol.md section 4.
const EXPECTED = [
  ['HELLO', { type: 'hello', token: b('tok'), clientInfo: 'sdk/1', sessionId: 7n, resume: [{ stream: 'user:u42', epoch: 1, lastOffset: 41n }] }],
  ['WELCOME', {
    type: 'welcome', sessionId: 7n, epoch: 1, inboxTail: 41n, broadcastEpoch: 1, broadcastTail: 12n,
    heartbeatIntervalMs: 30000, maxSleepIntervalMs: 300000, maxPayload: 65536, maxRooms: 64,
    serverTimeMs: 1700000000000n, user: 'u42',
  }],
  ['PING', { type: 'ping', nonce: 1n }],
  ['PONG', { type: 'pong', nonce: 1n }],
  ['JOIN', { type: 'join', reqId: 1, room: 'lobby' }],
  ['LEAVE', { type: 'leave', reqId: 2, room: 'lobby' }],
  ['ROOM_RESULT', { type: 'roomResult', reqId: 1, status: 0, epoch: 1, tail: 99n }],
  ['PUBLISH', { type: 'publish', room: 'lobby', seq: 5n, payload: b('hi') }],
  ['PUBLISH_ACK', { type: 'publishAck', seq: 5n, status: 0 }],
  ['PUSH', { type: 'push', stream: 'room:lobby', epoch: 1, offset: 100n, payload: b('hi'), urgent: true }],
  ['ACK', { type: 'ack', stream: 'user:u42', offset: 42n }],
  ['RESUME_RESULT GAP', { type: 'resumeResult', stream: 'user:u42', outcome: ResumeOutcome.GAP, status: 0, oldEpoch: 1, newEpoch: 1, missingFrom: 42n, missingTo: 50n }],
  ['RESUME_RESULT REFUSED', { type: 'resumeResult', stream: 'room:vip', outcome: ResumeOutcome.REFUSED, status: Status.FORBIDDEN, oldEpoch: 1, newEpoch: 1, missingFrom: 0n, missingTo: 0n }],
  ['SLEEP', { type: 'sleep', intervalMs: 120000 }],
  ['SLEEP_ACK', { type: 'sleepAck', intervalMs: 120000 }],
  ['WAKE', { type: 'wake' }],
  ['WAKE_ACK', { type: 'wakeAck', skipped: [{ stream: 'room:lobby', resumeFrom: 164n, count: 3 }] }],
  ['ERROR', { type: 'error', code: 4, text: 'slow' }],
  ['CLOSE', { type: 'close', reason: CloseReason.HEARTBEAT_TIMEOUT, text: 'heartbeat timeout' }],
];

test('protocol.md has one hex example per expected frame', () => {
  assert.equal(blocks.length, EXPECTED.length);
});

EXPECTED.forEach(([name, frame], i) => {
  test(`spec example ${name}: encode gives the documented bytes, decode gives the frame`, () => {
    assert.deepEqual(encodeFrame(frame), blocks[i]);
    const d = decodeFrame(blocks[i]);
    assert.equal(d.size, blocks[i].length);
    assert.deepEqual(d.frame, frame);
  });
});

test('partial frames decode to null until complete', () => {
  const push = blocks[9];
  for (let n = 0; n < push.length; n++) assert.equal(decodeFrame(push.subarray(0, n)), null);
  assert.ok(decodeFrame(push));
});

test('several frames in one message', () => {
  const both = new Uint8Array([...blocks[2], ...blocks[4]]);
  assert.deepEqual(decodeAll(both).map((f) => f.type), ['ping', 'join']);
  assert.throws(() => decodeAll(both.subarray(0, both.length - 1)), ProtocolError);
});

function expectError(bytes, reason, re) {
  assert.throws(() => decodeFrame(bytes), (e) => e instanceof ProtocolError && e.reason === reason && re.test(e.message));
}

test('bad frames are protocol errors with the right close reason', () => {
  const ping = blocks[2];
  const v = Uint8Array.from(ping); v[0] = 2;
  expectError(v, CloseReason.UNSUPPORTED_VERSION, /version/);
  const op = Uint8Array.from(ping); op[1] = 0x13;
  expectError(op, CloseReason.PROTOCOL_ERROR, /unknown op/);
  const flags = Uint8Array.from(ping); flags[3] = 1;
  expectError(flags, CloseReason.PROTOCOL_ERROR, /reserved flags/);
  const big = Uint8Array.from(ping); big.set([0, 1, 0, 1], 4);
  expectError(big, CloseReason.FRAME_TOO_LARGE, /over the maximum/);
  assert.doesNotThrow(() => decodeFrame(big, 65537));
  const short = Uint8Array.from(ping.subarray(0, 15)); short[7] = 7;
  expectError(short, CloseReason.PROTOCOL_ERROR, /truncated nonce/);
  const long = new Uint8Array([...ping, 0]); long[7] = 9;
  expectError(long, CloseReason.PROTOCOL_ERROR, /trailing bytes/);
  const kind = Uint8Array.from(blocks[10]); kind[8] = 3;
  expectError(kind, CloseReason.PROTOCOL_ERROR, /stream kind/);
  const utf = Uint8Array.from(blocks[17]); utf[12] = 0xff;
  expectError(utf, CloseReason.PROTOCOL_ERROR, /UTF-8/);
  const outcome = Uint8Array.from(blocks[11]); outcome[13] = 4;
  expectError(outcome, CloseReason.PROTOCOL_ERROR, /outcome/);
  const refusedOk = Uint8Array.from(blocks[12]); refusedOk[15] = 0;
  expectError(refusedOk, CloseReason.PROTOCOL_ERROR, /status/);
});

test('u64 fields use the whole range as BigInt', () => {
  const max = (1n << 64n) - 1n;
  const f = { type: 'push', stream: 'room:r', epoch: 0xffffffff, offset: max, payload: new Uint8Array(0), urgent: false };
  const d = decodeFrame(encodeFrame(f)).frame;
  assert.equal(d.offset, max);
  assert.equal(d.epoch, 0xffffffff);
  assert.throws(() => encodeFrame({ type: 'ping', nonce: max + 1n }), RangeError);
});

test('names are 1..=255 bytes, counted in UTF-8', () => {
  assert.throws(() => encodeFrame({ type: 'join', reqId: 1, room: '' }), RangeError);
  assert.throws(() => encodeFrame({ type: 'join', reqId: 1, room: 'é'.repeat(128) }), RangeError);
  assert.doesNotThrow(() => encodeFrame({ type: 'join', reqId: 1, room: 'é'.repeat(127) }));
});
