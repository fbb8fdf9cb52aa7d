// The ringport protocol codec (docs/protocol.md sections 1-5): frames to bytes and back.
// Pure functions, no I/O. Every u64 is a BigInt, every u32/u16/u8 a Number.
// Streams are strings: "room:<name>" or "user:<id>".

export const VERSION = 1;
export const HEADER_LEN = 8;
/** Payload limit before WELCOME (and the least a client accepts). */
export const HANDSHAKE_MAX_PAYLOAD = 65536;
export const FLAG_URGENT = 0x0001;

export const Op = Object.freeze({
  HELLO: 0x01, WELCOME: 0x02, PING: 0x03, PONG: 0x04, JOIN: 0x05, LEAVE: 0x06,
  ROOM_RESULT: 0x07, PUBLISH: 0x08, PUBLISH_ACK: 0x09, PUSH: 0x0a, ACK: 0x0b,
  RESUME_RESULT: 0x0c, SLEEP: 0x0d, SLEEP_ACK: 0x0e, WAKE: 0x0f, WAKE_ACK: 0x10,
  ERROR: 0x11, CLOSE: 0x12,
});
const OP_NAMES = Object.fromEntries(Object.entries(Op).map(([k, v]) => [v, k]));
export function opName(op) { return OP_NAMES[op] ?? `0x${op.toString(16)}`; }

export const CloseReason = Object.freeze({
  NORMAL: 0, GOING_AWAY: 1, PROTOCOL_ERROR: 2, HEARTBEAT_TIMEOUT: 3, HANDSHAKE_TIMEOUT: 4,
  AUTH_FAILED: 5, FRAME_TOO_LARGE: 6, UNSUPPORTED_VERSION: 7, POLICY: 8, REPLACED: 9,
  INTERNAL: 10, CONNECTION_LOST: 65535,
});
export const Status = Object.freeze({
  OK: 0, NOT_FOUND: 1, FORBIDDEN: 2, LIMIT_EXCEEDED: 3, RATE_LIMITED: 4, NOT_JOINED: 5,
  INVALID: 6, INTERNAL: 7,
});
export const ResumeOutcome = Object.freeze({ RESUMED: 0, GAP: 1, EPOCH_CHANGED: 2, REFUSED: 3 });

/** A malformed frame; `reason` is the CLOSE reason it calls for. */
export class ProtocolError extends Error {
  constructor(message, reason = CloseReason.PROTOCOL_ERROR) {
    super(message);
    this.name = 'ProtocolError';
    this.reason = reason;
  }
}

const U64_MAX = (1n << 64n) - 1n;
const enc = new TextEncoder();
const dec = new TextDecoder('utf-8', { fatal: true });

function toBytes(v) {
  if (v == null) return new Uint8Array(0);
  if (typeof v === 'string') return enc.encode(v);
  if (v instanceof Uint8Array) return v;
  if (v instanceof ArrayBuffer) return new Uint8Array(v);
  if (ArrayBuffer.isView(v)) return new Uint8Array(v.buffer, v.byteOffset, v.byteLength);
  throw new TypeError('expected a string, Uint8Array or ArrayBuffer');
}

/** Splits "room:lobby" into [1, "lobby"], "user:u42" into [2, "u42"]. */
export function parseStream(s) {
  if (typeof s === 'string') {
    if (s.startsWith('room:')) return [1, s.slice(5)];
    if (s.startsWith('user:')) return [2, s.slice(5)];
  }
  throw new TypeError(`stream must be "room:<name>" or "user:<id>", got ${s}`);
}

class Writer {
  constructor() { this.parts = []; this.len = 0; }
  push(bytes) { this.parts.push(bytes); this.len += bytes.length; }
  u8(v) { this.push(Uint8Array.of(v & 0xff)); }
  u16(v) { const b = new Uint8Array(2); new DataView(b.buffer).setUint16(0, v); this.push(b); }
  u32(v) { const b = new Uint8Array(4); new DataView(b.buffer).setUint32(0, v >>> 0); this.push(b); }
  u64(v) {
    const big = BigInt(v);
    if (big < 0n || big > U64_MAX) throw new RangeError(`u64 out of range: ${v}`);
    const b = new Uint8Array(8); new DataView(b.buffer).setBigUint64(0, big); this.push(b);
  }
  lenPrefixed(bytes, width, field, min = 0) {
    const max = width === 1 ? 0xff : 0xffff;
    if (bytes.length > max) throw new RangeError(`${field} is ${bytes.length} bytes, at most ${max}`);
    if (bytes.length < min) throw new RangeError(`${field} must not be empty`);
    if (width === 1) this.u8(bytes.length); else this.u16(bytes.length);
    this.push(bytes);
  }
  name(s, field) { this.lenPrefixed(enc.encode(s), 1, field, 1); }
  stream(s) { const [kind, name] = parseStream(s); this.u8(kind); this.name(name, 'stream name'); }
  bytes() {
    const out = new Uint8Array(this.len);
    let o = 0;
    for (const p of this.parts) { out.set(p, o); o += p.length; }
    return out;
  }
}

function writePayload(w, f) {
  switch (f.type) {
    case 'hello': {
      w.lenPrefixed(toBytes(f.token), 2, 'token');
      w.lenPrefixed(enc.encode(f.clientInfo ?? ''), 2, 'client_info');
      const sid = BigInt(f.sessionId ?? 0n);
      const entries = f.resume ?? [];
      if (sid === 0n && entries.length) throw new RangeError('resume entries need a session id');
      w.u64(sid);
      w.u16(entries.length);
      for (const e of entries) { w.stream(e.stream); w.u32(e.epoch); w.u64(e.lastOffset); }
      return 0;
    }
    case 'welcome':
      w.u64(f.sessionId); w.u32(f.epoch); w.u64(f.inboxTail); w.u32(f.broadcastEpoch);
      w.u64(f.broadcastTail); w.u32(f.heartbeatIntervalMs); w.u32(f.maxSleepIntervalMs);
      w.u32(f.maxPayload); w.u16(f.maxRooms); w.u64(f.serverTimeMs);
      w.lenPrefixed(enc.encode(f.user ?? ''), 1, 'user');
      return 0;
    case 'ping': case 'pong': w.u64(f.nonce); return 0;
    case 'join': case 'leave': w.u32(f.reqId); w.name(f.room, 'room'); return 0;
    case 'roomResult': w.u32(f.reqId); w.u16(f.status); w.u32(f.epoch); w.u64(f.tail); return 0;
    case 'publish': w.name(f.room, 'room'); w.u64(f.seq); w.push(toBytes(f.payload)); return 0;
    case 'publishAck': w.u64(f.seq); w.u16(f.status); return 0;
    case 'push':
      w.stream(f.stream); w.u32(f.epoch); w.u64(f.offset); w.push(toBytes(f.payload));
      return f.urgent ? FLAG_URGENT : 0;
    case 'ack': w.stream(f.stream); w.u64(f.offset); return 0;
    case 'resumeResult':
      w.stream(f.stream); w.u8(f.outcome); w.u16(f.status); w.u32(f.oldEpoch); w.u32(f.newEpoch);
      w.u64(f.missingFrom); w.u64(f.missingTo);
      return 0;
    case 'sleep': case 'sleepAck': w.u32(f.intervalMs); return 0;
    case 'wake': return 0;
    case 'wakeAck':
      w.u16(f.skipped.length);
      for (const s of f.skipped) { w.stream(s.stream); w.u64(s.resumeFrom); w.u32(s.count); }
      return 0;
    case 'error': case 'close': {
      w.u16(f.type === 'error' ? f.code : f.reason);
      w.lenPrefixed(enc.encode(f.text ?? ''), 2, 'text');
      return 0;
    }
    default: throw new TypeError(`unknown frame type ${f.type}`);
  }
}

const TYPE_OP = {
  hello: Op.HELLO, welcome: Op.WELCOME, ping: Op.PING, pong: Op.PONG, join: Op.JOIN,
  leave: Op.LEAVE, roomResult: Op.ROOM_RESULT, publish: Op.PUBLISH, publishAck: Op.PUBLISH_ACK,
  push: Op.PUSH, ack: Op.ACK, resumeResult: Op.RESUME_RESULT, sleep: Op.SLEEP,
  sleepAck: Op.SLEEP_ACK, wake: Op.WAKE, wakeAck: Op.WAKE_ACK, error: Op.ERROR, close: Op.CLOSE,
};
const OP_TYPE = Object.fromEntries(Object.entries(TYPE_OP).map(([k, v]) => [v, k]));

/** Encodes one frame object (`{type: 'join', reqId, room}`...) to header + payload bytes. */
export function encodeFrame(f) {
  const op = TYPE_OP[f.type];
  if (op === undefined) throw new TypeError(`unknown frame type ${f.type}`);
  const w = new Writer();
  const flags = writePayload(w, f);
  const payload = w.bytes();
  const out = new Uint8Array(HEADER_LEN + payload.length);
  const dv = new DataView(out.buffer);
  dv.setUint8(0, VERSION); dv.setUint8(1, op); dv.setUint16(2, flags); dv.setUint32(4, payload.length);
  out.set(payload, HEADER_LEN);
  return out;
}

class Reader {
  constructor(bytes) {
    this.b = bytes; this.dv = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength); this.o = 0;
  }
  need(n, field) {
    if (this.o + n > this.b.length) throw new ProtocolError(`truncated ${field}`);
  }
  u8(f) { this.need(1, f); return this.dv.getUint8(this.o++); }
  u16(f) { this.need(2, f); const v = this.dv.getUint16(this.o); this.o += 2; return v; }
  u32(f) { this.need(4, f); const v = this.dv.getUint32(this.o); this.o += 4; return v; }
  u64(f) { this.need(8, f); const v = this.dv.getBigUint64(this.o); this.o += 8; return v; }
  raw(n, f) { this.need(n, f); const v = this.b.slice(this.o, this.o + n); this.o += n; return v; }
  str(width, f) {
    const n = width === 1 ? this.u8(f) : this.u16(f);
    try { return dec.decode(this.raw(n, f)); } catch (e) {
      if (e instanceof ProtocolError) throw e;
      throw new ProtocolError(`invalid UTF-8 in ${f}`);
    }
  }
  name(f) { const s = this.str(1, f); if (!s) throw new ProtocolError(`empty ${f}`); return s; }
  stream() {
    const kind = this.u8('stream kind');
    if (kind !== 1 && kind !== 2) throw new ProtocolError(`unknown stream kind ${kind}`);
    return (kind === 1 ? 'room:' : 'user:') + this.name('stream name');
  }
  rest() { const v = this.b.slice(this.o); this.o = this.b.length; return v; }
  end(op) { if (this.o !== this.b.length) throw new ProtocolError(`trailing bytes in ${opName(op)}`); }
}

function readPayload(op, flags, r) {
  switch (op) {
    case Op.HELLO: {
      const token = r.raw(r.u16('token'), 'token');
      const clientInfo = r.str(2, 'client_info');
      const sessionId = r.u64('session_id');
      const n = r.u16('count');
      const resume = [];
      for (let i = 0; i < n; i++) {
        resume.push({ stream: r.stream(), epoch: r.u32('epoch'), lastOffset: r.u64('last_offset') });
      }
      return { type: 'hello', token, clientInfo, sessionId, resume };
    }
    case Op.WELCOME:
      return {
        type: 'welcome', sessionId: r.u64('session_id'), epoch: r.u32('epoch'),
        inboxTail: r.u64('inbox_tail'), broadcastEpoch: r.u32('broadcast_epoch'),
        broadcastTail: r.u64('broadcast_tail'), heartbeatIntervalMs: r.u32('heartbeat_interval_ms'),
        maxSleepIntervalMs: r.u32('max_sleep_interval_ms'), maxPayload: r.u32('max_payload'),
        maxRooms: r.u16('max_rooms'), serverTimeMs: r.u64('server_time_ms'), user: r.str(1, 'user'),
      };
    case Op.PING: return { type: 'ping', nonce: r.u64('nonce') };
    case Op.PONG: return { type: 'pong', nonce: r.u64('nonce') };
    case Op.JOIN: return { type: 'join', reqId: r.u32('req_id'), room: r.name('room') };
    case Op.LEAVE: return { type: 'leave', reqId: r.u32('req_id'), room: r.name('room') };
    case Op.ROOM_RESULT:
      return { type: 'roomResult', reqId: r.u32('req_id'), status: r.u16('status'), epoch: r.u32('epoch'), tail: r.u64('tail') };
    case Op.PUBLISH: return { type: 'publish', room: r.name('room'), seq: r.u64('seq'), payload: r.rest() };
    case Op.PUBLISH_ACK: return { type: 'publishAck', seq: r.u64('seq'), status: r.u16('status') };
    case Op.PUSH:
      return {
        type: 'push', stream: r.stream(), epoch: r.u32('epoch'), offset: r.u64('offset'),
        payload: r.rest(), urgent: (flags & FLAG_URGENT) !== 0,
      };
    case Op.ACK: return { type: 'ack', stream: r.stream(), offset: r.u64('offset') };
    case Op.RESUME_RESULT: {
      const f = {
        type: 'resumeResult', stream: r.stream(), outcome: r.u8('outcome'), status: r.u16('status'),
        oldEpoch: r.u32('old_epoch'), newEpoch: r.u32('new_epoch'),
        missingFrom: r.u64('missing_from'), missingTo: r.u64('missing_to'),
      };
      if (f.outcome > 3) throw new ProtocolError(`unknown resume outcome ${f.outcome}`);
      if ((f.outcome === ResumeOutcome.REFUSED) === (f.status === Status.OK)) {
        throw new ProtocolError(`resume outcome ${f.outcome} with status ${f.status}`);
      }
      return f;
    }
    case Op.SLEEP: return { type: 'sleep', intervalMs: r.u32('interval_ms') };
    case Op.SLEEP_ACK: return { type: 'sleepAck', intervalMs: r.u32('interval_ms') };
    case Op.WAKE: return { type: 'wake' };
    case Op.WAKE_ACK: {
      const n = r.u16('count');
      const skipped = [];
      for (let i = 0; i < n; i++) {
        skipped.push({ stream: r.stream(), resumeFrom: r.u64('resume_from'), count: r.u32('skipped') });
      }
      return { type: 'wakeAck', skipped };
    }
    case Op.ERROR: return { type: 'error', code: r.u16('code'), text: r.str(2, 'text') };
    case Op.CLOSE: return { type: 'close', reason: r.u16('reason'), text: r.str(2, 'text') };
    default: throw new ProtocolError(`unknown op 0x${op.toString(16)}`);
  }
}

/**
 * Decodes the frame at the start of `bytes`. Returns `null` while incomplete, else
 * `{frame, size}` (size = bytes consumed). Throws ProtocolError for a bad frame; the
 * declared length is checked against `maxPayload` from the header alone.
 */
export function decodeFrame(bytes, maxPayload = HANDSHAKE_MAX_PAYLOAD) {
  bytes = toBytes(bytes);
  if (bytes.length < HEADER_LEN) return null;
  const dv = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const version = dv.getUint8(0);
  const op = dv.getUint8(1);
  const flags = dv.getUint16(2);
  const len = dv.getUint32(4);
  if (version !== VERSION) {
    throw new ProtocolError(`unsupported version ${version}`, CloseReason.UNSUPPORTED_VERSION);
  }
  if (len > maxPayload) {
    throw new ProtocolError(`payload of ${len} bytes over the maximum ${maxPayload}`, CloseReason.FRAME_TOO_LARGE);
  }
  if (!OP_TYPE[op]) throw new ProtocolError(`unknown op 0x${op.toString(16)}`);
  if (flags & ~(op === Op.PUSH ? FLAG_URGENT : 0)) {
    throw new ProtocolError(`reserved flags 0x${flags.toString(16)} in ${opName(op)}`);
  }
  if (bytes.length < HEADER_LEN + len) return null;
  const r = new Reader(bytes.subarray(HEADER_LEN, HEADER_LEN + len));
  const frame = readPayload(op, flags, r);
  r.end(op);
  return { frame, size: HEADER_LEN + len };
}

/** Decodes every frame of a buffer that holds whole frames (a WebSocket message). */
export function decodeAll(bytes, maxPayload = HANDSHAKE_MAX_PAYLOAD) {
  bytes = toBytes(bytes);
  const frames = [];
  let o = 0;
  while (o < bytes.length) {
    const d = decodeFrame(bytes.subarray(o), maxPayload);
    if (!d) throw new ProtocolError('message ends inside a frame');
    frames.push(d.frame);
    o += d.size;
  }
  return frames;
}

/** Payload bytes as UTF-8 text. */
export function text(payload) { return new TextDecoder().decode(payload); }
