// RingportClient: the ClientSession driven over a WebSocket, with timers, reconnect with
// exponential backoff and jitter, resume, publish retry, and sleep/wake on page visibility.
import { ClientSession } from './session.js';
import { CloseReason, Status } from './codec.js';

export const SUBPROTOCOL = 'ringport.v1';

const STATUS_NAMES = Object.fromEntries(Object.entries(Status).map(([k, v]) => [v, k]));
const REASON_NAMES = Object.fromEntries(Object.entries(CloseReason).map(([k, v]) => [v, k]));
export function statusName(s) { return STATUS_NAMES[s] ?? `STATUS_${s}`; }
export function closeReasonName(r) { return REASON_NAMES[r] ?? `REASON_${r}`; }

/** A request the server refused (ROOM_RESULT / PUBLISH_ACK status other than OK), or a client failure. */
export class RingportError extends Error {
  constructor(message, { status, reason } = {}) {
    super(message);
    this.name = 'RingportError';
    if (status !== undefined) this.status = status;
    if (reason !== undefined) this.reason = reason;
  }
}

/** Close reasons after which the client does not reconnect by itself (docs/protocol.md 5.1). */
const FINAL = new Set([CloseReason.AUTH_FAILED, CloseReason.REPLACED]);

const utf8 = new TextDecoder();

export class RingportClient {
  /**
   * @param {object} options see index.d.ts (ClientOptions)
   */
  constructor(options) {
    if (!options || !options.url) throw new TypeError('options.url is required');
    this.options = {
      reconnect: true,
      initialBackoffMs: 500,
      maxBackoffMs: 30000,
      backoffFactor: 2,
      jitter: 0.5,
      sleepOnHidden: true,
      sleepIntervalMs: 120000,
      ...options,
    };
    this.WebSocket = options.WebSocket ?? globalThis.WebSocket;
    if (!this.WebSocket) throw new TypeError('no WebSocket: pass options.WebSocket outside a browser');
    this.now = options.now ?? (() => (globalThis.performance ? performance.now() : Date.now()));
    this.random = options.random ?? Math.random;
    this.session = new ClientSession({
      token: '',
      clientInfo: options.clientInfo ?? 'ringport-js/0.1.0',
      handshakeTimeoutMs: options.handshakeTimeoutMs,
      heartbeatCapMs: options.heartbeatCapMs,
      deadAfterIntervals: options.deadAfterIntervals,
    });
    this.listeners = new Map();
    this.ws = null;
    this.timer = null;
    this.reconnectTimer = null;
    this.attempt = 0;
    this.stopped = true;
    this.stateName = 'disconnected';
    this.nextSeq = 1n;
    this.publishes = new Map(); // seq -> {room, payload, resolve, reject}
    this.roomWaiters = new Map(); // reqId -> {resolve, reject, room}
    this.wantSleep = false;
    this.connectWaiters = [];
    this.openTimer = null;
    if (options.resume) {
      this.session.restore(options.resume);
      if (options.resume.nextSeq !== undefined) this.nextSeq = BigInt(options.resume.nextSeq);
    }
    this.document = options.document ?? globalThis.document ?? null;
    this.onVisibility = () => this.visibilityChanged();
  }

  // ---- events -------------------------------------------------------------------------

  /** Subscribes to 'message' | 'loss' | 'resume' | 'state' | 'error' | 'welcome' | 'close' | 'resumeRefused' | 'wake' | 'sleep' | 'serverError'. */
  on(event, fn) {
    if (!this.listeners.has(event)) this.listeners.set(event, new Set());
    this.listeners.get(event).add(fn);
    return () => this.off(event, fn);
  }

  off(event, fn) { this.listeners.get(event)?.delete(fn); }

  once(event, fn) {
    const off = this.on(event, (...a) => { off(); fn(...a); });
    return off;
  }

  emit(event, value) {
    for (const fn of [...(this.listeners.get(event) ?? [])]) {
      try { fn(value); } catch (e) {
        if (event !== 'error') this.emit('error', e);
      }
    }
  }

  setState(s) {
    if (s === this.stateName) return;
    this.stateName = s;
    this.emit('state', s);
  }

  /** 'disconnected' | 'connecting' | 'handshaking' | 'active' | 'sleeping' | 'closed'. */
  get state() { return this.stateName; }
  get sessionId() { return this.session.sessionId; }
  /** Rooms joined (confirmed by the server). */
  get rooms() { return new Set(this.session.rooms); }
  /** Per-stream {epoch, offset} of the last message received. */
  position(stream) { return this.session.positions.get(stream); }
  /**
   * The session, rooms, stream positions and next publish seq, JSON-safe: pass it as
   * `options.resume` to a new client (after a page reload) to continue this session.
   */
  snapshot() { return { ...this.session.snapshot(), nextSeq: String(this.nextSeq) }; }

  // ---- life cycle ---------------------------------------------------------------------

  /** Starts connecting (and reconnecting, until close()). Resolves at the first WELCOME. */
  connect() {
    const welcomed = new Promise((resolve, reject) => this.connectWaiters.push({ resolve, reject }));
    if (this.stopped) {
      this.stopped = false;
      if (this.options.sleepOnHidden && this.document?.addEventListener) {
        this.document.addEventListener('visibilitychange', this.onVisibility);
        this.wantSleep = this.document.visibilityState === 'hidden';
      }
      this.open();
    }
    return welcomed;
  }

  /** Sends CLOSE NORMAL, closes the socket and stops reconnecting. Pending requests are rejected. */
  close(why = new RingportError('client closed')) {
    if (this.stopped) return;
    this.stopped = true;
    clearTimeout(this.reconnectTimer);
    clearTimeout(this.openTimer);
    this.document?.removeEventListener?.('visibilitychange', this.onVisibility);
    this.session.close(CloseReason.NORMAL, 'client closed', this.now());
    this.flush();
    this.drainEvents();
    this.dropSocket(1000);
    const err = why;
    for (const w of this.connectWaiters.splice(0)) w.reject(err);
    for (const p of this.publishes.values()) p.reject(err);
    this.publishes.clear();
    for (const w of this.roomWaiters.values()) w.reject(err);
    this.roomWaiters.clear();
    this.setState('closed');
  }

  async token() {
    const t = this.options.token;
    return typeof t === 'function' ? await t() : (t ?? '');
  }

  async open() {
    this.setState('connecting');
    let token;
    try { token = await this.token(); } catch (e) {
      this.emit('error', e);
      this.scheduleReconnect();
      return;
    }
    if (this.stopped) return;
    this.session.config.token = token;
    let ws;
    try {
      ws = new this.WebSocket(this.options.url, SUBPROTOCOL);
    } catch (e) {
      this.emit('error', e);
      this.scheduleReconnect();
      return;
    }
    ws.binaryType = 'arraybuffer';
    this.ws = ws;
    // The handshake deadline also bounds the WebSocket's own opening.
    clearTimeout(this.openTimer);
    this.openTimer = setTimeout(() => {
      if (this.ws !== ws || ws.readyState === 1) return;
      this.ws = null;
      try { ws.close(); } catch { /* not open yet */ }
      this.emit('error', new RingportError(`WebSocket to ${this.options.url} did not open within ${this.session.config.handshakeTimeoutMs} ms`));
      this.scheduleReconnect();
    }, this.session.config.handshakeTimeoutMs);
    ws.onopen = () => {
      if (this.ws !== ws) return;
      clearTimeout(this.openTimer);
      this.session.connect(this.now());
      this.setState('handshaking');
      this.pump();
    };
    ws.onmessage = (ev) => {
      if (this.ws !== ws) return;
      if (typeof ev.data === 'string') {
        this.session.close(CloseReason.PROTOCOL_ERROR, 'text message', this.now());
      } else {
        const data = ev.data instanceof ArrayBuffer ? new Uint8Array(ev.data) : new Uint8Array(ev.data.buffer ?? ev.data, ev.data.byteOffset ?? 0, ev.data.byteLength);
        this.session.handleMessage(data, this.now());
      }
      this.pump();
    };
    ws.onerror = () => {};
    ws.onclose = (ev) => {
      if (this.ws !== ws) return;
      this.ws = null;
      clearTimeout(this.openTimer);
      if (this.session.state === 'disconnected') {
        // Never opened (refused, unreachable): no session event will follow.
        this.emit('error', new RingportError(`WebSocket to ${this.options.url} failed (code ${ev?.code ?? '?'})`));
        this.scheduleReconnect();
        return;
      }
      this.session.transportClosed(`WebSocket closed (code ${ev?.code ?? '?'})`);
      this.pump();
    };
  }

  /** Sends queued frames, emits events, arms the timer; ends the socket if the session ended. */
  pump() {
    do {
      this.flush();
      this.drainEvents();
    } while (this.session.transmit.length > 0 && this.ws);
    this.flush();
    this.arm();
  }

  flush() {
    let b;
    while ((b = this.session.pollTransmit())) {
      if (this.ws && this.ws.readyState === 1) this.ws.send(b);
    }
  }

  arm() {
    clearTimeout(this.timer);
    this.timer = null;
    const at = this.session.pollTimeout();
    if (at == null) return;
    this.timer = setTimeout(() => {
      this.session.handleTimeout(this.now());
      this.pump();
    }, Math.max(0, Math.ceil(at - this.now())));
  }

  dropSocket(code) {
    clearTimeout(this.timer);
    this.timer = null;
    const ws = this.ws;
    this.ws = null;
    if (ws) { try { ws.close(code); } catch { /* already closing */ } }
  }

  scheduleReconnect() {
    if (this.stopped || !this.options.reconnect) { if (!this.stopped) this.close(); return; }
    const o = this.options;
    const base = Math.min(o.maxBackoffMs, o.initialBackoffMs * o.backoffFactor ** this.attempt);
    const delay = base * (1 - o.jitter * this.random());
    this.attempt += 1;
    this.setState('disconnected');
    clearTimeout(this.reconnectTimer);
    this.reconnectTimer = setTimeout(() => { if (!this.stopped) this.open(); }, delay);
    this.emit('reconnecting', { attempt: this.attempt, delayMs: delay });
  }

  drainEvents() {
    let ev;
    while ((ev = this.session.pollEvent())) this.dispatch(ev);
  }

  dispatch(ev) {
    switch (ev.type) {
      case 'welcome': {
        this.attempt = 0;
        this.setState('active');
        const { type: _welcome, ...fields } = ev.welcome;
        const info = { ...fields, resumed: ev.resumed };
        // Unacknowledged publishes again, same seq: the server answers OK without
        // publishing twice if the session was resumed (docs/protocol.md 4.6).
        const now = this.now();
        for (const [seq, p] of this.publishes) this.session.publish(p.room, seq, p.payload, now);
        if (this.wantSleep) this.session.sleep(this.options.sleepIntervalMs, now);
        for (const w of this.connectWaiters.splice(0)) w.resolve(info);
        this.emit('welcome', info);
        break;
      }
      case 'message': {
        const p = ev.push;
        this.emit('message', new Message(p));
        break;
      }
      case 'loss': this.emit('loss', ev.loss); break;
      case 'resumeResult': {
        const r = ev.result;
        const outcome = ['resumed', 'gap', 'epochChanged', 'refused'][r.outcome];
        this.emit('resume', {
          stream: r.stream, outcome, status: r.status, oldEpoch: r.oldEpoch, newEpoch: r.newEpoch,
          missingFrom: r.missingFrom, missingTo: r.missingTo,
        });
        break;
      }
      case 'resumeRefused':
        this.emit('resumeRefused', { stream: ev.stream, status: ev.status });
        this.emit('loss', { stream: ev.stream, reason: 'refused', status: ev.status });
        break;
      case 'roomResult': {
        const w = this.roomWaiters.get(ev.reqId);
        if (w) {
          this.roomWaiters.delete(ev.reqId);
          if (ev.status === Status.OK) w.resolve({ room: w.room, status: ev.status });
          else w.reject(new RingportError(`${w.join ? 'JOIN' : 'LEAVE'} ${w.room}: ${statusName(ev.status)}`, { status: ev.status }));
        } else if (ev.status !== Status.OK && ev.room) {
          this.emit('error', new RingportError(`re-JOIN ${ev.room}: ${statusName(ev.status)}`, { status: ev.status }));
        }
        break;
      }
      case 'publishAck': {
        const p = this.publishes.get(ev.seq);
        if (!p) break;
        this.publishes.delete(ev.seq);
        if (ev.status === Status.OK) p.resolve({ seq: ev.seq });
        else p.reject(new RingportError(`PUBLISH ${p.room}: ${statusName(ev.status)}`, { status: ev.status }));
        break;
      }
      case 'sleepAck':
        this.setState('sleeping');
        this.emit('sleep', { intervalMs: ev.intervalMs });
        break;
      case 'wakeAck':
        this.setState('active');
        this.emit('wake', { skipped: ev.skipped });
        break;
      case 'serverError':
        this.emit('serverError', { code: ev.code, text: ev.text });
        break;
      case 'pong': case 'duplicate':
        this.emit(ev.type, ev);
        break;
      case 'closed': {
        this.dropSocket(ev.byPeer || ev.reason === CloseReason.NORMAL ? 1000 : 4000 + Math.min(ev.reason, 999));
        this.emit('close', { reason: ev.reason, reasonName: closeReasonName(ev.reason), text: ev.text, byPeer: ev.byPeer });
        if (this.stopped) break;
        if (FINAL.has(ev.reason)) {
          const err = new RingportError(`connection closed: ${closeReasonName(ev.reason)} ${ev.text}`, { reason: ev.reason });
          this.emit('error', err);
          this.close(err);
        } else {
          this.scheduleReconnect();
        }
        break;
      }
      default: break;
    }
  }

  // ---- requests -----------------------------------------------------------------------

  /** Joins `room`; resolves on ROOM_RESULT OK, rejects with the status otherwise. Kept across reconnects. */
  join(room) { return this.roomRequest(true, room); }
  /** Leaves `room`. */
  leave(room) { return this.roomRequest(false, room); }

  roomRequest(join, room) {
    return new Promise((resolve, reject) => {
      const reqId = join ? this.session.join(room, this.now()) : this.session.leave(room, this.now());
      this.roomWaiters.set(reqId, { resolve, reject, room, join });
      this.pump();
    });
  }

  /**
   * Publishes `payload` (string or bytes) to `room` with the next seq; resolves on
   * PUBLISH_ACK OK. Sent again with the same seq after a reconnect until answered.
   */
  publish(room, payload) {
    const bytes = typeof payload === 'string' ? new TextEncoder().encode(payload) : new Uint8Array(payload.buffer ?? payload, payload.byteOffset ?? 0, payload.byteLength);
    return new Promise((resolve, reject) => {
      this.session.checkPublish(room, bytes);
      const seq = this.nextSeq;
      this.nextSeq += 1n;
      this.publishes.set(seq, { room, payload: bytes, resolve, reject });
      this.session.publish(room, seq, bytes, this.now());
      this.pump();
    });
  }

  /** Asks the server to let the client sleep (also done on `visibilitychange` to hidden). */
  sleep(intervalMs = this.options.sleepIntervalMs) {
    this.wantSleep = true;
    this.session.sleep(intervalMs, this.now());
    this.pump();
  }

  /** Wakes the client (also done when the page becomes visible). */
  wake() {
    this.wantSleep = false;
    this.session.wake(this.now());
    this.pump();
  }

  visibilityChanged() {
    if (this.document.visibilityState === 'hidden') this.sleep();
    else this.wake();
  }
}

/** A message handed to the application: each (stream, epoch, offset) at most once. */
export class Message {
  constructor(p) {
    this.stream = p.stream;
    this.room = p.stream.startsWith('room:') ? p.stream.slice(5) : null;
    this.epoch = p.epoch;
    this.offset = p.offset;
    this.payload = p.payload;
    this.urgent = p.urgent;
  }
  /** The payload as UTF-8 text. */
  get text() { return utf8.decode(this.payload); }
}
