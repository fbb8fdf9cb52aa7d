// Compiled by `tsc -p test/types` (sdk/js/test.sh): the declarations cover the documented usage.
import { RingportClient, Message, Loss, encodeFrame, decodeFrame, Status, ClientSession, RingportError } from 'ringport-client';

const client = new RingportClient({ url: 'ws://localhost:4666/ringport', token: () => Promise.resolve('jwt') });
client.on('message', (m: Message) => {
  const offset: bigint = m.offset;
  const text: string = m.text;
  void offset; void text;
});
client.on('loss', (l: Loss) => { if (l.from !== undefined && l.to !== undefined) console.log(l.stream, l.to - l.from); });
client.on('state', (s) => { const x: 'active' | string = s; void x; });
client.on('error', (e: Error) => console.error(e));
client.on('resume', (r) => { if (r.outcome === 'gap') console.log(r.stream, r.missingTo - r.missingFrom); });
const snap: string = JSON.stringify(client.snapshot());
const again = new RingportClient({ url: 'ws://localhost:4666/ringport', resume: JSON.parse(snap) });
void again;
async function main(): Promise<void> {
  const w = await client.connect();
  const sid: bigint = w.sessionId;
  void sid;
  await client.join('lobby');
  const { seq } = await client.publish('lobby', 'hi');
  const s: bigint = seq;
  void s;
  try { await client.leave('lobby'); } catch (e) { if (e instanceof RingportError && e.status === Status.NOT_JOINED) return; }
  client.close();
}
void main;
const bytes: Uint8Array = encodeFrame({ type: 'ping', nonce: 1n });
const d = decodeFrame(bytes);
if (d && d.frame.type === 'ping') { const n: bigint = d.frame.nonce; void n; }
const session = new ClientSession({ token: 't' });
session.connect(0);
const t: number | null = session.pollTimeout();
void t;
// @ts-expect-error u64 fields are bigint, not number
encodeFrame({ type: 'ping', nonce: 1 });
