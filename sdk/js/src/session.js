// The client side of the protocol as a sans-IO state machine: a port of the Rust reference
// `ClientSession` (crates/ringport-proto/src/client/). No clock, no socket: the caller
// passes `now` (ms), sends what `pollTransmit()` yields and acts on `pollEvent()`.
import {
  encodeFrame, decodeAll, CloseReason, Status, ResumeOutcome, HANDSHAKE_MAX_PAYLOAD, opName,
  ProtocolError,
} from './codec.js';

export const BROADCAST_STREAM = 'room:*';

/**
 * Per-stream positions: epoch and highest offset received, for dedupe, resume and loss
 * reports (crates/ringport-proto/src/client/positions.rs).
 */
export class Positions {
  constructor() { this.streams = new Map(); }

  /** 'deliver' | 'duplicate' | a loss object to report before delivering. */
  onPush(stream, epoch, offset) {
    const p = this.streams.get(stream);
    if (!p) { this.streams.set(stream, { epoch, last: offset, announced: null }); return 'deliver'; }
    if (p.epoch !== epoch) {
      this.streams.set(stream, { epoch, last: offset, announced: null });
      return { stream, reason: 'epochChanged', epoch, from: 1n, to: offset > 1n ? offset : 1n };
    }
    if (offset <= p.last) return 'duplicate';
    const from = p.last + 1n;
    p.last = offset;
    if (from === offset) return 'deliver';
    const a = p.announced;
    p.announced = null;
    if (a && a.from <= from && offset <= a.to) return 'deliver';
    return { stream, reason: 'gap', epoch, from, to: offset };
  }

  /** The loss a RESUME_RESULT announces, or null. */
  onResume(r) {
    if (r.outcome === ResumeOutcome.RESUMED) return null;
    if (r.outcome === ResumeOutcome.REFUSED) { this.forget(r.stream); return null; }
    const reason = r.outcome === ResumeOutcome.GAP ? 'gap' : 'epochChanged';
    let p = this.streams.get(r.stream);
    if (!p) { p = { epoch: r.oldEpoch, last: 0n, announced: null }; this.streams.set(r.stream, p); }
    const cont = r.missingTo;
    const before = cont > 0n ? cont - 1n : 0n;
    if (reason === 'epochChanged' || p.epoch !== r.newEpoch) {
      this.streams.set(r.stream, { epoch: r.newEpoch, last: before, announced: null });
      const from = r.missingFrom < r.missingTo ? r.missingFrom : r.missingTo;
      return { stream: r.stream, reason, epoch: r.newEpoch, from, to: r.missingTo };
    }
    // A gap may start below what was delivered (unacked inbox redelivery): only the part above counts.
    const start = r.missingFrom > p.last + 1n ? r.missingFrom : p.last + 1n;
    if (before > p.last) p.last = before;
    return start < cont ? { stream: r.stream, reason, epoch: r.newEpoch, from: start, to: cont } : null;
  }

  /** The loss of a WAKE_ACK run, or null if already reported by its jump. */
  onSkipped(stream, resumeFrom, count) {
    let from = resumeFrom;
    const to = resumeFrom + BigInt(count);
    const p = this.streams.get(stream);
    let epoch = 0;
    if (p) {
      if (p.last + 1n > from) from = p.last + 1n;
      if (from >= to) return null;
      p.announced = { from, to };
      epoch = p.epoch;
    }
    return { stream, reason: 'skippedWhileAsleep', epoch, from, to };
  }

  /** Starts a stream at (epoch, tail) unless it has a position; true if it did. */
  start(stream, epoch, tail) {
    if (this.streams.has(stream)) return false;
    this.streams.set(stream, { epoch, last: tail, announced: null });
    return true;
  }

  resumePoints() {
    return [...this.streams.entries()]
      .map(([stream, p]) => ({ stream, epoch: p.epoch, lastOffset: p.last }))
      .sort((a, b) => (a.stream < b.stream ? -1 : a.stream > b.stream ? 1 : 0));
  }

  knows(stream) { return this.streams.has(stream); }
  forget(stream) { this.streams.delete(stream); }
  get(stream) { const p = this.streams.get(stream); return p ? { epoch: p.epoch, offset: p.last } : null; }
}

/** Client states: 'disconnected' | 'handshaking' | 'active' | 'sleeping'. */
export class ClientSession {
  constructor(config = {}) {
    this.config = {
      token: config.token ?? '',
      clientInfo: config.clientInfo ?? 'ringport-js/0.1',
      handshakeTimeoutMs: config.handshakeTimeoutMs ?? 10000,
      heartbeatCapMs: config.heartbeatCapMs ?? null,
      deadAfterIntervals: config.deadAfterIntervals ?? 3,
    };
    this.state = 'disconnected';
    this.sessionId = 0n;
    this.positions = new Positions();
    this.rooms = new Set();
    this.roomReqs = [];
    this.nextReq = 1;
    this.inbox = null;
    this.inboxStart = null;
    this.acked = null;
    this.maxPayload = HANDSHAKE_MAX_PAYLOAD;
    this.intervalMs = 30000;
    this.awakeIntervalMs = 30000;
    this.lastTx = 0;
    this.lastRx = 0;
    this.deadline = 0;
    this.transmit = [];
    this.events = [];
    this.welcomeInfo = null;
  }

  established() { return this.state === 'active' || this.state === 'sleeping'; }

  /** A new transport is up: queues HELLO resuming the session and every known stream. */
  connect(now) {
    this.transmit = [];
    this.state = 'handshaking';
    this.deadline = now + this.config.handshakeTimeoutMs;
    this.lastRx = now;
    this.acked = null;
    for (const r of this.roomReqs) r.sent = false;
    const resume = this.sessionId !== 0n ? this.positions.resumePoints() : [];
    this.queue({
      type: 'hello', token: this.config.token, clientInfo: this.config.clientInfo,
      sessionId: this.sessionId, resume,
    }, now);
  }

  /** Handles one WebSocket message (whole frames), then ACKs the inbox up to what arrived. */
  handleMessage(bytes, now) {
    if (this.state === 'disconnected') return;
    let frames;
    try {
      frames = decodeAll(bytes, Math.max(this.maxPayload, HANDSHAKE_MAX_PAYLOAD));
    } catch (e) {
      if (!(e instanceof ProtocolError)) throw e;
      this.fail(e.reason, e.message, now);
      return;
    }
    for (const f of frames) {
      if (this.state === 'disconnected') break;
      this.handleFrame(f, now);
    }
    this.ackInbox(now);
  }

  handleFrame(f, now) {
    if (this.state === 'disconnected') return;
    this.lastRx = now;
    if (f.type === 'close') { this.end(f.reason, f.text, true); return; }
    if (this.state === 'handshaking') {
      if (f.type === 'welcome') this.welcome(f, now);
      else this.fail(CloseReason.PROTOCOL_ERROR, `${f.type} before WELCOME`, now);
      return;
    }
    switch (f.type) {
      case 'push': this.push(f); break;
      case 'resumeResult':
        this.events.push({ type: 'resumeResult', result: f });
        if (f.outcome === ResumeOutcome.REFUSED) {
          this.positions.forget(f.stream);
          if (f.stream.startsWith('room:')) this.rooms.delete(f.stream.slice(5));
          this.events.push({ type: 'resumeRefused', stream: f.stream, status: f.status });
        } else {
          const loss = this.positions.onResume(f);
          if (loss) this.events.push({ type: 'loss', loss });
        }
        break;
      case 'ping': this.queue({ type: 'pong', nonce: f.nonce }, now); break;
      case 'pong': this.events.push({ type: 'pong', nonce: f.nonce }); break;
      case 'publishAck': this.events.push({ type: 'publishAck', seq: f.seq, status: f.status }); break;
      case 'roomResult': {
        const i = this.roomReqs.findIndex((q) => q.reqId === f.reqId);
        let room = null;
        if (i >= 0) {
          const q = this.roomReqs.splice(i, 1)[0];
          room = q.room;
          const stream = `room:${q.room}`;
          if (f.status === Status.OK && q.join) {
            this.positions.start(stream, f.epoch, f.tail);
            this.rooms.add(q.room);
          } else if (f.status === Status.OK) {
            this.positions.forget(stream);
            this.rooms.delete(q.room);
          }
        }
        this.events.push({ type: 'roomResult', reqId: f.reqId, status: f.status, room });
        break;
      }
      case 'sleepAck':
        this.state = 'sleeping';
        this.intervalMs = Math.max(f.intervalMs, 1);
        this.events.push({ type: 'sleepAck', intervalMs: f.intervalMs });
        break;
      case 'wakeAck':
        this.state = 'active';
        this.intervalMs = this.awakeIntervalMs;
        for (const s of f.skipped) {
          const loss = this.positions.onSkipped(s.stream, s.resumeFrom, s.count);
          if (loss) this.events.push({ type: 'loss', loss });
        }
        this.events.push({ type: 'wakeAck', skipped: f.skipped });
        break;
      case 'error': this.events.push({ type: 'serverError', code: f.code, text: f.text }); break;
      default:
        this.fail(CloseReason.PROTOCOL_ERROR, `unexpected ${opName(encodeOp(f))} from server`, now);
    }
  }

  welcome(w, now) {
    const resumed = this.sessionId !== 0n && this.sessionId === w.sessionId;
    this.sessionId = w.sessionId;
    this.maxPayload = w.maxPayload;
    let interval = Math.max(w.heartbeatIntervalMs, 1);
    if (this.config.heartbeatCapMs != null) interval = Math.min(interval, Math.max(this.config.heartbeatCapMs, 1));
    this.intervalMs = interval;
    this.awakeIntervalMs = interval;
    this.state = 'active';
    this.welcomeInfo = w;
    if (w.user) {
      const inbox = `user:${w.user}`;
      if (this.positions.start(inbox, w.epoch, w.inboxTail)) this.inboxStart = { epoch: w.epoch, offset: w.inboxTail };
      this.inbox = inbox;
    }
    this.positions.start(BROADCAST_STREAM, w.broadcastEpoch, w.broadcastTail);
    this.events.push({ type: 'welcome', sessionId: w.sessionId, resumed, welcome: w });
    // Rooms no resume entry covers are joined again; requests in flight are resent.
    for (const room of this.rooms) {
      if (!this.positions.knows(`room:${room}`) && !this.roomReqs.some((q) => q.room === room)) {
        this.roomReqs.push({ reqId: this.takeReqId(), join: true, room, sent: false });
      }
    }
    this.sendRoomReqs(now);
  }

  push(p) {
    if (p.stream.startsWith('user:') && !this.inbox) this.inbox = p.stream;
    const v = this.positions.onPush(p.stream, p.epoch, p.offset);
    if (v === 'duplicate') { this.events.push({ type: 'duplicate', push: p }); return; }
    if (v !== 'deliver') {
      if (this.state === 'sleeping' && v.reason === 'gap') v.reason = 'skippedWhileAsleep';
      this.events.push({ type: 'loss', loss: v });
    }
    this.events.push({ type: 'message', push: p });
  }

  ackInbox(now) {
    if (!this.established() || !this.inbox) return;
    const pos = this.positions.get(this.inbox);
    if (!pos || same(pos, this.acked) || same(pos, this.inboxStart)) return;
    this.queue({ type: 'ack', stream: this.inbox, offset: pos.offset }, now);
    this.acked = pos;
  }

  /**
   * What a later page (a reload) needs to resume this session: its id, the rooms and every
   * stream's position. JSON-safe (u64 as decimal strings); see restore().
   */
  snapshot() {
    return {
      sessionId: String(this.sessionId),
      rooms: [...this.rooms],
      streams: [...this.positions.streams].map(([stream, p]) => ({ stream, epoch: p.epoch, offset: String(p.last) })),
    };
  }

  /**
   * Continues a snapshot()'s session: the next connect() sends HELLO with its id and resume
   * entries (the server resumes it if it still knows it for the same user; otherwise the
   * streams are resumed by offset in a new session). Only while disconnected; throws on a
   * malformed snapshot and changes nothing then.
   */
  restore(snap) {
    if (this.state !== 'disconnected') throw new Error('restore() before connect() only');
    if (!snap || typeof snap !== 'object' || !Array.isArray(snap.rooms) || !Array.isArray(snap.streams)) {
      throw new TypeError('not a session snapshot');
    }
    const u64 = (v) => {
      const b = BigInt(v);
      if (b < 0n || b > 0xffffffffffffffffn) throw new RangeError(`not a u64: ${v}`);
      return b;
    };
    const sessionId = u64(snap.sessionId);
    const positions = new Positions();
    for (const e of snap.streams) {
      if (typeof e.stream !== 'string' || !Number.isInteger(e.epoch) || e.epoch < 0 || e.epoch > 0xffffffff) {
        throw new TypeError('not a session snapshot');
      }
      positions.streams.set(e.stream, { epoch: e.epoch, last: u64(e.offset), announced: null });
    }
    for (const r of snap.rooms) checkName(r);
    this.sessionId = sessionId;
    this.positions = positions;
    this.rooms = new Set(snap.rooms);
  }

  takeReqId() {
    const id = this.nextReq;
    this.nextReq = (this.nextReq + 1) >>> 0 || 1;
    return id;
  }

  join(room, now) { return this.roomRequest(true, room, now); }
  leave(room, now) { return this.roomRequest(false, room, now); }

  roomRequest(join, room, now) {
    checkName(room);
    const reqId = this.takeReqId();
    this.roomReqs.push({ reqId, join, room, sent: false });
    this.sendRoomReqs(now);
    return reqId;
  }

  sendRoomReqs(now) {
    if (!this.established()) return;
    for (const q of this.roomReqs) {
      if (q.sent) continue;
      q.sent = true;
      this.queue({ type: q.join ? 'join' : 'leave', reqId: q.reqId, room: q.room }, now);
    }
  }

  /** Throws if a PUBLISH of `payload` to `room` can never be sent. */
  checkPublish(room, payload) {
    checkName(room);
    const len = 1 + new TextEncoder().encode(room).length + 8 + payload.length;
    if (len > this.maxPayload) throw new RangeError(`publish payload of ${len} bytes over the server's maximum ${this.maxPayload}`);
  }

  /** Sends PUBLISH if established; false: not connected (resend after the next welcome). */
  publish(room, seq, payload, now) {
    this.checkPublish(room, payload);
    if (!this.established()) return false;
    this.queue({ type: 'publish', room, seq, payload }, now);
    return true;
  }

  sleep(intervalMs, now) {
    if (!this.established()) return false;
    this.queue({ type: 'sleep', intervalMs }, now);
    return true;
  }

  wake(now) {
    if (!this.established()) return false;
    this.queue({ type: 'wake' }, now);
    return true;
  }

  ping(nonce, now) {
    if (!this.established()) return false;
    this.queue({ type: 'ping', nonce: BigInt(nonce) }, now);
    return true;
  }

  /** Deadlines at `now`: handshake, heartbeat duty (PING), dead connection. */
  handleTimeout(now) {
    if (this.state === 'handshaking') {
      if (now >= this.deadline) this.end(CloseReason.HANDSHAKE_TIMEOUT, 'no WELCOME within the handshake timeout', false);
    } else if (this.established()) {
      if (now >= this.deadAt()) {
        this.end(CloseReason.HEARTBEAT_TIMEOUT, 'no frame from server within the heartbeat deadline', false);
      } else if (now >= this.lastTx + this.intervalMs) {
        this.queue({ type: 'ping', nonce: BigInt(Math.max(0, Math.floor(now))) }, now);
      }
    }
  }

  deadAt() { return this.lastRx + this.intervalMs * Math.max(this.config.deadAfterIntervals, 1); }

  /** When handleTimeout must run next (null: no connection). */
  pollTimeout() {
    if (this.state === 'handshaking') return this.deadline;
    if (this.established()) return Math.min(this.deadAt(), this.lastTx + this.intervalMs);
    return null;
  }

  pollTransmit() { return this.transmit.shift() ?? null; }
  pollEvent() { return this.events.shift() ?? null; }

  /** The transport died without CLOSE. */
  transportClosed(text) {
    if (this.state !== 'disconnected') this.end(CloseReason.CONNECTION_LOST, text, false);
  }

  /** Sends CLOSE and ends the connection (flush pollTransmit, then close the socket). */
  close(reason, text, now) {
    if (this.state !== 'disconnected') this.fail(reason, text, now);
  }

  queue(frame, now) {
    this.transmit.push(encodeFrame(frame));
    this.lastTx = now;
  }

  fail(reason, text, now) {
    const bytes = new TextEncoder().encode(text);
    this.queue({ type: 'close', reason, text: new TextDecoder().decode(bytes.subarray(0, 1000)).replace(/\uFFFD$/, '') }, now);
    this.end(reason, text, false);
  }

  end(reason, text, byPeer) {
    this.state = 'disconnected';
    this.intervalMs = this.awakeIntervalMs;
    this.events.push({ type: 'closed', reason, text, byPeer });
  }
}

function same(a, b) { return !!a && !!b && a.epoch === b.epoch && a.offset === b.offset; }

function encodeOp(f) {
  return encodeFrame(f)[1];
}

/** Names are 1..=255 bytes of UTF-8 (docs/protocol.md 2). */
function checkName(name) {
  const n = new TextEncoder().encode(String(name)).length;
  if (n < 1 || n > 255) throw new RangeError(`room name must be 1..=255 bytes, got ${n}`);
}
