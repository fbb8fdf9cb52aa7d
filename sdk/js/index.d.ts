// Type declarations of the ringport browser SDK (plain ES modules, no build step).
// Every u64 of the protocol is a bigint; u8/u16/u32 are numbers.

/** "room:<name>" or "user:<id>"; the broadcast stream is "room:*". */
export type Stream = string;

export type State = 'disconnected' | 'connecting' | 'handshaking' | 'active' | 'sleeping' | 'closed';

export type LossReason = 'gap' | 'epochChanged' | 'skippedWhileAsleep' | 'refused';

/** Messages of `stream` that will never arrive: offsets [from, to) of `epoch`. */
export interface Loss {
  stream: Stream;
  reason: LossReason;
  /** Epoch the range belongs to (absent for 'refused'). */
  epoch?: number;
  from?: bigint;
  to?: bigint;
  /** For 'refused': the status of the RESUME_RESULT (e.g. Status.FORBIDDEN). */
  status?: number;
}

export interface WebSocketLike {
  binaryType: string;
  readyState: number;
  send(data: Uint8Array): void;
  close(code?: number, reason?: string): void;
  onopen: ((ev: unknown) => void) | null;
  onmessage: ((ev: { data: ArrayBuffer | ArrayBufferView | string }) => void) | null;
  onclose: ((ev: { code?: number }) => void) | null;
  onerror: ((ev: unknown) => void) | null;
}
export type WebSocketConstructor = new (url: string, protocols?: string | string[]) => WebSocketLike;

/** Minimal document for sleep/wake: `visibilityState` and 'visibilitychange' events. */
export interface VisibilitySource {
  visibilityState: string;
  addEventListener(type: 'visibilitychange', fn: () => void): void;
  removeEventListener(type: 'visibilitychange', fn: () => void): void;
}

export interface ClientOptions {
  /** e.g. "wss://push.example.com/ringport" (path: the gateway's websocket.path). */
  url: string;
  /** The credential for HELLO (a JWT), or a function called before every connection attempt. */
  token?: string | Uint8Array | (() => string | Uint8Array | Promise<string | Uint8Array>);
  /** Free text for the server's logs; default "ringport-js/0.1.0". */
  clientInfo?: string;
  /** WebSocket implementation; default globalThis.WebSocket (pass `ws` in Node). */
  WebSocket?: WebSocketConstructor;
  /** Reconnect after a lost connection (default true). */
  reconnect?: boolean;
  /** First reconnect delay, ms (default 500). */
  initialBackoffMs?: number;
  /** Largest reconnect delay, ms (default 30000). */
  maxBackoffMs?: number;
  /** Growth of the delay per failed attempt (default 2). */
  backoffFactor?: number;
  /** Fraction of the delay taken off at random, 0..1 (default 0.5). */
  jitter?: number;
  /** From connect to WELCOME, ms (default 10000). */
  handshakeTimeoutMs?: number;
  /** Ping at least this often even if WELCOME allows longer, ms. */
  heartbeatCapMs?: number;
  /** Silent heartbeat intervals after which the connection counts as dead (default 3). */
  deadAfterIntervals?: number;
  /** SLEEP when the page is hidden, WAKE when visible (default true). */
  sleepOnHidden?: boolean;
  /** Interval asked for in SLEEP, ms (default 120000; the server clamps it). */
  sleepIntervalMs?: number;
  /** The document to watch; default globalThis.document. */
  document?: VisibilitySource | null;
  /** Monotonic clock in ms; default performance.now. */
  now?: () => number;
  /** Random source for the jitter; default Math.random. */
  random?: () => number;
  /**
   * A `snapshot()` of an earlier client (e.g. kept in sessionStorage across a page reload):
   * the first HELLO resumes its session, rooms and stream positions, and publish seqs
   * continue after its `nextSeq`. Same user (token) needed for the server to keep the session.
   */
  resume?: ClientSnapshot;
}

/** JSON-safe state of a session (u64 values as decimal strings). */
export interface SessionSnapshot {
  sessionId: string;
  rooms: string[];
  streams: { stream: Stream; epoch: number; offset: string }[];
}

/** A client's SessionSnapshot plus the next publish seq. */
export interface ClientSnapshot extends SessionSnapshot {
  nextSeq?: string;
}

/** One RESUME_RESULT: how a stream named in HELLO was continued. */
export interface ResumeInfo {
  stream: Stream;
  outcome: 'resumed' | 'gap' | 'epochChanged' | 'refused';
  /** OK, or for 'refused' the reason (Status). */
  status: number;
  oldEpoch: number;
  newEpoch: number;
  /** Offsets [missingFrom, missingTo) of newEpoch are lost (gap, epochChanged); delivery continues at missingTo. */
  missingFrom: bigint;
  missingTo: bigint;
}

/** A message handed to the application: each (stream, epoch, offset) at most once. */
export class Message {
  readonly stream: Stream;
  /** The room name for room streams, else null. */
  readonly room: string | null;
  readonly epoch: number;
  readonly offset: bigint;
  readonly payload: Uint8Array;
  readonly urgent: boolean;
  /** The payload decoded as UTF-8. */
  readonly text: string;
}

export interface WelcomeInfo {
  sessionId: bigint;
  /** The previous session continued. */
  resumed: boolean;
  epoch: number;
  inboxTail: bigint;
  broadcastEpoch: number;
  broadcastTail: bigint;
  heartbeatIntervalMs: number;
  maxSleepIntervalMs: number;
  maxPayload: number;
  maxRooms: number;
  serverTimeMs: bigint;
  /** Authenticated user ("" if anonymous). */
  user: string;
}

export interface CloseInfo {
  reason: number;
  reasonName: string;
  text: string;
  /** The server sent CLOSE. */
  byPeer: boolean;
}

export interface SkippedRun { stream: Stream; resumeFrom: bigint; count: number }

export interface ClientEvents {
  message: Message;
  loss: Loss;
  /** One per resume entry of a HELLO, after WELCOME (every outcome, RESUMED included). */
  resume: ResumeInfo;
  state: State;
  error: Error;
  welcome: WelcomeInfo;
  close: CloseInfo;
  reconnecting: { attempt: number; delayMs: number };
  resumeRefused: { stream: Stream; status: number };
  sleep: { intervalMs: number };
  wake: { skipped: SkippedRun[] };
  serverError: { code: number; text: string };
  pong: { nonce: bigint };
  duplicate: { push: Frame };
}

export class RingportClient {
  constructor(options: ClientOptions);
  readonly state: State;
  readonly sessionId: bigint;
  readonly rooms: Set<string>;
  /** Epoch and offset of the last message received on `stream`. */
  position(stream: Stream): { epoch: number; offset: bigint } | null;
  /** Session, rooms, positions and next seq: pass as `options.resume` to continue after a reload. */
  snapshot(): ClientSnapshot;
  on<K extends keyof ClientEvents>(event: K, fn: (value: ClientEvents[K]) => void): () => void;
  once<K extends keyof ClientEvents>(event: K, fn: (value: ClientEvents[K]) => void): () => void;
  off<K extends keyof ClientEvents>(event: K, fn: (value: ClientEvents[K]) => void): void;
  /** Starts connecting and keeps reconnecting until close(); resolves at the first WELCOME. */
  connect(): Promise<WelcomeInfo>;
  /** CLOSE NORMAL, stop reconnecting, reject pending requests. */
  close(): void;
  join(room: string): Promise<{ room: string; status: number }>;
  leave(room: string): Promise<{ room: string; status: number }>;
  /** Resolves with the seq once the server answers PUBLISH_ACK OK; resent with the same seq after reconnects. */
  publish(room: string, payload: string | Uint8Array | ArrayBuffer): Promise<{ seq: bigint }>;
  sleep(intervalMs?: number): void;
  wake(): void;
}

export class RingportError extends Error {
  /** Status code of a refused request (Status). */
  status?: number;
  /** Close reason of a refused connection (CloseReason). */
  reason?: number;
}

export const SUBPROTOCOL: 'ringport.v1';
export function statusName(status: number): string;
export function closeReasonName(reason: number): string;

// ---- codec ----------------------------------------------------------------------------

export type Frame =
  | { type: 'hello'; token: string | Uint8Array; clientInfo?: string; sessionId?: bigint; resume?: { stream: Stream; epoch: number; lastOffset: bigint }[] }
  | { type: 'welcome' } & Omit<WelcomeInfo, 'resumed'>
  | { type: 'ping' | 'pong'; nonce: bigint }
  | { type: 'join' | 'leave'; reqId: number; room: string }
  | { type: 'roomResult'; reqId: number; status: number; epoch: number; tail: bigint }
  | { type: 'publish'; room: string; seq: bigint; payload: string | Uint8Array }
  | { type: 'publishAck'; seq: bigint; status: number }
  | { type: 'push'; stream: Stream; epoch: number; offset: bigint; payload: Uint8Array; urgent: boolean }
  | { type: 'ack'; stream: Stream; offset: bigint }
  | { type: 'resumeResult'; stream: Stream; outcome: number; status: number; oldEpoch: number; newEpoch: number; missingFrom: bigint; missingTo: bigint }
  | { type: 'sleep' | 'sleepAck'; intervalMs: number }
  | { type: 'wake' }
  | { type: 'wakeAck'; skipped: SkippedRun[] }
  | { type: 'error'; code: number; text: string }
  | { type: 'close'; reason: number; text: string };

export function encodeFrame(frame: Frame): Uint8Array;
/** null while incomplete; throws ProtocolError for a bad frame. */
export function decodeFrame(bytes: Uint8Array | ArrayBuffer, maxPayload?: number): { frame: Frame; size: number } | null;
/** Every frame of a buffer holding whole frames (one WebSocket message). */
export function decodeAll(bytes: Uint8Array | ArrayBuffer, maxPayload?: number): Frame[];
export function text(payload: Uint8Array): string;
export function parseStream(stream: Stream): [1 | 2, string];
export function opName(op: number): string;

export class ProtocolError extends Error {
  /** The CLOSE reason the error calls for. */
  reason: number;
}

export const VERSION: 1;
export const HEADER_LEN: 8;
export const HANDSHAKE_MAX_PAYLOAD: 65536;
export const FLAG_URGENT: 1;
export const Op: Readonly<Record<'HELLO' | 'WELCOME' | 'PING' | 'PONG' | 'JOIN' | 'LEAVE' | 'ROOM_RESULT' | 'PUBLISH' | 'PUBLISH_ACK' | 'PUSH' | 'ACK' | 'RESUME_RESULT' | 'SLEEP' | 'SLEEP_ACK' | 'WAKE' | 'WAKE_ACK' | 'ERROR' | 'CLOSE', number>>;
export const CloseReason: Readonly<Record<'NORMAL' | 'GOING_AWAY' | 'PROTOCOL_ERROR' | 'HEARTBEAT_TIMEOUT' | 'HANDSHAKE_TIMEOUT' | 'AUTH_FAILED' | 'FRAME_TOO_LARGE' | 'UNSUPPORTED_VERSION' | 'POLICY' | 'REPLACED' | 'INTERNAL' | 'CONNECTION_LOST', number>>;
export const Status: Readonly<Record<'OK' | 'NOT_FOUND' | 'FORBIDDEN' | 'LIMIT_EXCEEDED' | 'RATE_LIMITED' | 'NOT_JOINED' | 'INVALID' | 'INTERNAL', number>>;
export const ResumeOutcome: Readonly<Record<'RESUMED' | 'GAP' | 'EPOCH_CHANGED' | 'REFUSED', number>>;

// ---- sans-IO session (for other transports) ------------------------------------------

export const BROADCAST_STREAM: 'room:*';

export class Positions {
  get(stream: Stream): { epoch: number; offset: bigint } | null;
  knows(stream: Stream): boolean;
  resumePoints(): { stream: Stream; epoch: number; lastOffset: bigint }[];
}

export type SessionEvent =
  | { type: 'welcome'; sessionId: bigint; resumed: boolean; welcome: Omit<WelcomeInfo, 'resumed'> }
  | { type: 'message'; push: Extract<Frame, { type: 'push' }> }
  | { type: 'duplicate'; push: Extract<Frame, { type: 'push' }> }
  | { type: 'loss'; loss: Loss }
  | { type: 'resumeRefused'; stream: Stream; status: number }
  | { type: 'resumeResult'; result: Extract<Frame, { type: 'resumeResult' }> }
  | { type: 'roomResult'; reqId: number; status: number; room: string | null }
  | { type: 'publishAck'; seq: bigint; status: number }
  | { type: 'sleepAck'; intervalMs: number }
  | { type: 'wakeAck'; skipped: SkippedRun[] }
  | { type: 'serverError'; code: number; text: string }
  | { type: 'pong'; nonce: bigint }
  | { type: 'closed'; reason: number; text: string; byPeer: boolean };

/** The protocol's client rules without I/O: a port of the Rust `ClientSession`. */
export class ClientSession {
  constructor(config?: { token?: string | Uint8Array; clientInfo?: string; handshakeTimeoutMs?: number; heartbeatCapMs?: number | null; deadAfterIntervals?: number });
  readonly state: 'disconnected' | 'handshaking' | 'active' | 'sleeping';
  readonly sessionId: bigint;
  readonly maxPayload: number;
  readonly positions: Positions;
  readonly rooms: Set<string>;
  connect(now: number): void;
  handleMessage(bytes: Uint8Array, now: number): void;
  handleTimeout(now: number): void;
  pollTimeout(): number | null;
  pollTransmit(): Uint8Array | null;
  pollEvent(): SessionEvent | null;
  transportClosed(text: string): void;
  close(reason: number, text: string, now: number): void;
  join(room: string, now: number): number;
  leave(room: string, now: number): number;
  publish(room: string, seq: bigint, payload: Uint8Array, now: number): boolean;
  checkPublish(room: string, payload: Uint8Array): void;
  sleep(intervalMs: number, now: number): boolean;
  wake(now: number): boolean;
  ping(nonce: bigint | number, now: number): boolean;
  snapshot(): SessionSnapshot;
  /** Before connect() only: the next HELLO resumes the snapshot's session and streams. */
  restore(snapshot: SessionSnapshot): void;
}
