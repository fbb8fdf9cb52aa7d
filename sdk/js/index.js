// ringport browser SDK: the ringport protocol over WebSocket. No runtime dependencies.
export { RingportClient, RingportError, Message, SUBPROTOCOL, statusName, closeReasonName } from './src/client.js';
export { ClientSession, Positions, BROADCAST_STREAM } from './src/session.js';
export {
  encodeFrame, decodeFrame, decodeAll, text, parseStream, Op, opName, CloseReason, Status,
  ResumeOutcome, ProtocolError, VERSION, HEADER_LEN, HANDSHAKE_MAX_PAYLOAD, FLAG_URGENT,
} from './src/codec.js';
