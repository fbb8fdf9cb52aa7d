// The demo and the dashboard in headless Chromium, against a real `ringport serve`.
//
// Started by tests/browser/run.sh (and .ci/run). Uses Debian's chromium (CHROMIUM, default
// /usr/bin/chromium) driven by playwright-core; screenshots and the gateway's log go to
// target/browser-artifacts/. Every wait is a bounded poll with a generous deadline.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdirSync, createWriteStream } from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';

const here = path.dirname(fileURLToPath(import.meta.url));
const root = path.resolve(here, '../..');
const BIN = process.env.RINGPORT_BIN || path.join(root, 'target/release/ringport');
const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';
const ARTIFACTS = path.join(root, 'target/browser-artifacts');
const WAIT = 30_000; // a loaded 2-core machine
const SECRET = 'browser-test-secret-0123456789abcdef';
const API_KEY = 'browser-test-api-key-0123';
const ROOM = 'demo.e2e';

mkdirSync(ARTIFACTS, { recursive: true });

function freePort() {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address();
      s.close(() => resolve(port));
    });
  });
}

const clientPort = await freePort();
const adminPort = await freePort();
const ADMIN = `http://127.0.0.1:${adminPort}`;
let server = null;
let serverStarts = 0;

async function until(what, fn, ms = WAIT) {
  const deadline = Date.now() + ms;
  let last;
  for (;;) {
    try {
      last = await fn();
      if (last) return last;
    } catch (e) { last = e; }
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what} (last: ${last})`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

async function adminApi(method, p, body) {
  const r = await fetch(`${ADMIN}${p}`, {
    method,
    headers: { Authorization: `Bearer ${API_KEY}`, 'content-type': 'application/json' },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await r.text();
  if (!r.ok) throw new Error(`${method} ${p}: ${r.status} ${text}`);
  return text ? JSON.parse(text) : null;
}

async function startServer() {
  serverStarts += 1;
  const log = createWriteStream(path.join(ARTIFACTS, `gateway-${serverStarts}.log`));
  server = spawn(BIN, [
    'serve', '--listen', `127.0.0.1:${clientPort}`, '--admin', `127.0.0.1:${adminPort}`,
    '--workers', '2', '--set', 'admin.demo=true', '--set', 'log.level=info',
    // Short history: a page that stays offline through 8 pushes resumes with a GAP.
    '--set', 'history.max_messages_per_stream=5',
  ], {
    env: { ...process.env, RINGPORT_AUTH_SECRET: SECRET, RINGPORT_ADMIN__API_KEY: API_KEY },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  server.stdout.pipe(log);
  server.stderr.pipe(log);
  const proc = server;
  proc.exited = new Promise((resolve) => proc.once('exit', (code, signal) => resolve({ code, signal })));
  // Bind failures (the old process's ports not free yet) end the process: start again.
  await until('the gateway to answer /healthz', async () => {
    if (proc.exitCode !== null) throw new Error(`ringport exited with ${proc.exitCode}`);
    return (await adminApi('GET', '/healthz')).status === 'ok';
  });
}

async function stopServer() {
  const proc = server;
  server = null;
  proc.kill('SIGTERM');
  const exit = await Promise.race([proc.exited, new Promise((r) => setTimeout(() => r(null), WAIT))]);
  if (!exit) { proc.kill('SIGKILL'); await proc.exited; }
}

let browser;
let pageA;
let pageB;

before(async () => {
  await startServer();
  browser = await chromium.launch({ executablePath: CHROMIUM, args: ['--no-sandbox'], headless: true });
});

after(async () => {
  if (browser) {
    // Screenshots of whatever state the pages are in, for a failed run too.
    for (const [name, page] of [['demo-a-final', pageA], ['demo-b-final', pageB]]) {
      if (page && !page.isClosed()) await page.screenshot({ path: path.join(ARTIFACTS, `${name}.png`) }).catch(() => {});
    }
    await browser.close();
  }
  if (server) await stopServer();
});

function consoleTo(page, name) {
  const log = createWriteStream(path.join(ARTIFACTS, `${name}-console.log`));
  page.on('console', (m) => log.write(`${m.type()}: ${m.text()}\n`));
  page.on('pageerror', (e) => log.write(`pageerror: ${e.message}\n`));
}

const logTexts = (page, source) => page.$$eval(`#log li[data-source="${source}"]`, (lis) => lis.map((li) => li.textContent));
const demoState = (page) => page.evaluate(() => {
  const d = window.ringportDemo;
  return d && {
    state: d.state, joined: !!d.joined, welcomes: d.welcomes.length, received: d.received, errors: d.errors,
    welcomeList: d.welcomes, streams: d.streams, restored: d.restored, losses: d.losses,
  };
});
const streamLi = (page, stream) => page.$eval(`#streams li[data-stream="${stream}"]`, (li) => ({ state: li.dataset.state, text: li.textContent }));

test('demo: two pages join a room, see API pushes and each other\'s comments, survive a restart', async () => {
  const context = await browser.newContext({ viewport: { width: 1280, height: 800 } });
  pageA = await context.newPage();
  pageB = await context.newPage();
  consoleTo(pageA, 'demo-a');
  consoleTo(pageB, 'demo-b');
  await pageA.goto(`${ADMIN}/demo?room=${ROOM}&name=alice`);
  await pageB.goto(`${ADMIN}/demo?room=${ROOM}&name=bob`);
  for (const page of [pageA, pageB]) {
    await until('the demo to connect and join', async () => {
      const s = await demoState(page);
      return s && s.state === 'active' && s.joined;
    });
    assert.equal(await page.getAttribute('#status', 'data-state'), 'active');
  }
  // The token came from /demo/token (a secret is set): the gateway knows both as guests.
  const room = await adminApi('GET', `/v1/rooms/${ROOM}`);
  assert.equal(room.online, 2, JSON.stringify(room));
  for (const m of room.members) assert.match(m.user, /^guest-[0-9a-f]{8}$/);

  // A push through the HTTP API shows on both pages.
  const pushed = await adminApi('POST', `/v1/push/room/${ROOM}?wait=delivered`, { payload: 'hello from the API' });
  assert.equal(pushed.recipients, 2, JSON.stringify(pushed));
  for (const page of [pageA, pageB]) {
    await until('the API push on the page', async () => (await logTexts(page, 'server')).some((t) => t.includes('hello from the API')));
  }

  // A comment typed in A flies across B (and A: the publisher gets its own message).
  await pageA.fill('#text', 'first comment from alice');
  await pageA.press('#text', 'Enter');
  for (const page of [pageB, pageA]) {
    await until('alice\'s comment on the page', async () => (await logTexts(page, 'comment')).some((t) => t.includes('alice') && t.includes('first comment from alice')));
  }
  assert.ok((await pageB.evaluate(() => window.ringportDemo.flying)) >= 1, 'comments are on the canvas');
  await pageB.screenshot({ path: path.join(ARTIFACTS, 'demo-b-comments.png') });

  // Restart the gateway on the same ports: the status shows the outage, then the pages
  // reconnect (a new session: the old process's sessions are gone) and keep their streams,
  // each shown as restarted (a new epoch: the old history is gone).
  const usersBefore = await Promise.all([pageA, pageB].map(async (p) => (await demoState(p)).welcomeList[0].user));
  await stopServer();
  for (const page of [pageA, pageB]) {
    await until('the status to show the outage', async () => (await page.getAttribute('#status', 'data-state')) !== 'active');
  }
  await pageA.screenshot({ path: path.join(ARTIFACTS, 'demo-a-disconnected.png') });
  await until('the gateway to restart on the same ports', async () => {
    try { await startServer(); return true; } catch (e) {
      if (server) await stopServer();
      throw e;
    }
  }, WAIT * 2);
  for (const page of [pageA, pageB]) {
    await until('the demo to reconnect', async () => {
      const s = await demoState(page);
      return s.state === 'active' && s.welcomes === 2;
    });
    assert.match(await page.textContent('#resume'), /new session .*restarted/);
    assert.equal(await page.textContent('#welcomes'), '2');
    await until('the room stream shown as restarted', async () => (await streamLi(page, `room:${ROOM}`)).state === 'epochChanged');
    assert.match((await streamLi(page, `room:${ROOM}`)).text, /new epoch/);
  }
  // The guest token was kept (sessionStorage): the same guests came back.
  const usersAfter = await Promise.all([pageA, pageB].map(async (p) => (await demoState(p)).welcomeList[1].user));
  assert.deepEqual(usersAfter, usersBefore);
  assert.notEqual(usersBefore[0], usersBefore[1]);
  await until('both pages back in the room', async () => (await adminApi('GET', `/v1/rooms/${ROOM}`)).online === 2);
  // Errors until now are the outage's (failed connects and token fetches); none after it.
  const errorsBefore = await Promise.all([pageA, pageB].map(async (p) => (await demoState(p)).errors.length));
  const again = await adminApi('POST', `/v1/push/room/${ROOM}?wait=delivered`, { payload: 'after the restart' });
  assert.equal(again.recipients, 2, JSON.stringify(again));
  for (const [i, page] of [pageA, pageB].entries()) {
    await until('the push after the restart', async () => (await logTexts(page, 'server')).some((t) => t.includes('after the restart')));
    assert.deepEqual((await demoState(page)).errors.slice(errorsBefore[i]), []);
  }
  // Comments work on the new session too.
  await pageB.fill('#text', 'bob is back');
  await pageB.press('#text', 'Enter');
  await until('bob\'s comment on A', async () => (await logTexts(pageA, 'comment')).some((t) => t.includes('bob is back')));
  await pageA.screenshot({ path: path.join(ARTIFACTS, 'demo-a-after-restart.png') });
});

test('demo: offline and back replays what was missed, shows a GAP past the history, and a reload resumes the session', async () => {
  const RROOM = 'demo.resume';
  const context = await browser.newContext({ viewport: { width: 1280, height: 800 } });
  const page = await context.newPage();
  consoleTo(page, 'demo-resume');
  await page.goto(`${ADMIN}/demo?room=${RROOM}&name=carl`);
  await until('the demo to connect and join', async () => {
    const s = await demoState(page);
    return s && s.state === 'active' && s.joined;
  });
  assert.equal((await streamLi(page, `room:${RROOM}`)).state, 'live');
  await adminApi('POST', `/v1/push/room/${RROOM}?wait=delivered`, { payload: 'r1' });
  await until('r1', async () => (await logTexts(page, 'server')).some((t) => t.includes('r1')));

  // Offline (CLOSE NORMAL), two pushes, back: the same session resumes and replays them.
  await page.click('#toggle');
  await until('the page to go offline', async () => (await demoState(page)).state === 'closed');
  await until('the server to see it gone', async () => (await adminApi('GET', `/v1/rooms/${RROOM}`)).online === 0);
  for (const t of ['missed 1', 'missed 2']) await adminApi('POST', `/v1/push/room/${RROOM}`, { payload: t });
  await page.click('#toggle');
  await until('the resume', async () => (await demoState(page)).welcomes === 2 && (await demoState(page)).state === 'active');
  let st = await demoState(page);
  assert.equal(st.welcomeList[1].resumed, true);
  assert.equal(st.welcomeList[1].sessionId, st.welcomeList[0].sessionId);
  await until('the replayed messages', async () => {
    const texts = await logTexts(page, 'server');
    return texts.some((t) => t.includes('missed 1')) && texts.some((t) => t.includes('missed 2'));
  });
  assert.equal((await streamLi(page, `room:${RROOM}`)).state, 'resumed');
  assert.match(await page.textContent('#resume'), /resumed the session/);

  // Offline through 8 pushes with 5 kept per stream: a GAP, shown with its range; the 5
  // newest arrive.
  await page.click('#toggle');
  await until('the page to go offline again', async () => (await demoState(page)).state === 'closed');
  await until('the server to see it gone again', async () => (await adminApi('GET', `/v1/rooms/${RROOM}`)).online === 0);
  for (let i = 0; i < 8; i++) await adminApi('POST', `/v1/push/room/${RROOM}`, { payload: `burst ${i}` });
  await page.click('#toggle');
  await until('the GAP', async () => (await streamLi(page, `room:${RROOM}`).catch(() => ({}))).state === 'gap');
  assert.match((await streamLi(page, `room:${RROOM}`)).text, /GAP.*offsets \d+\.\.\d+ lost/);
  await until('the newest burst messages', async () => (await logTexts(page, 'server')).some((t) => t.includes('burst 7')));
  const texts = await logTexts(page, 'server');
  assert.ok(!texts.some((t) => t.includes('burst 0')), 'burst 0 was no longer kept');
  st = await demoState(page);
  assert.ok(st.losses.some((l) => l.reason === 'gap' && l.stream === `room:${RROOM}`), JSON.stringify(st.losses));
  await page.screenshot({ path: path.join(ARTIFACTS, 'demo-gap.png') });

  // A comment before the reload takes publish seq 1 of the session.
  await page.fill('#text', 'typed before the reload');
  await page.press('#text', 'Enter');
  await until('the comment', async () => (await logTexts(page, 'comment')).some((t) => t.includes('typed before the reload')));
  await until('its PUBLISH_ACK', async () => (await page.evaluate(() => window.ringportDemo.sent)) === 1);

  // A reload: the new page finds the guest token and the session in sessionStorage and
  // resumes the same session (no new guest, no new JOIN).
  const before = st.welcomeList.at(-1);
  await page.reload();
  await until('the reloaded page to connect', async () => {
    const s = await demoState(page);
    return s && s.state === 'active' && s.joined;
  });
  st = await demoState(page);
  assert.equal(st.restored, true);
  assert.equal(st.welcomeList[0].resumed, true, JSON.stringify(st.welcomeList));
  assert.equal(st.welcomeList[0].sessionId, before.sessionId);
  assert.equal(st.welcomeList[0].user, before.user);
  await until('the room shown as resumed', async () => (await streamLi(page, `room:${RROOM}`)).state === 'resumed');
  assert.match(await page.textContent('#resume'), /resumed the session/);
  await until('one member again', async () => (await adminApi('GET', `/v1/rooms/${RROOM}`)).online === 1);
  // Publish seqs continue from the saved session: this comment is delivered, not taken for a
  // resend of seq 1 (which the server would acknowledge without publishing).
  await page.fill('#text', 'after the reload');
  await page.press('#text', 'Enter');
  await until('the comment after the reload', async () => (await logTexts(page, 'comment')).some((t) => t.includes('after the reload')));
  await page.screenshot({ path: path.join(ARTIFACTS, 'demo-after-reload.png') });
  await context.close();
  // The dashboard test counts the first test's two pages only.
  await until('the page gone from the server', async () => (await adminApi('GET', `/v1/rooms/${RROOM}`)).online === 0);
});

test('dashboard: asks for the key, charts live data, numbers match /v1/stats', async () => {
  const context = await browser.newContext({ viewport: { width: 1400, height: 1100 } });
  const page = await context.newPage();
  consoleTo(page, 'dashboard');
  await page.goto(`${ADMIN}/dashboard?interval=500`);
  // Without the key the data routes answer 401: the page asks for it.
  await page.waitForSelector('#keyform:not([hidden])', { timeout: WAIT });
  assert.equal(await page.getAttribute('#live', 'data-ok'), 'false');
  await page.fill('#key', API_KEY);
  await page.click('#keyform button');
  // Traffic while the charts sample: pushes to the demo room (the demo pages are still in it).
  for (let i = 0; i < 20; i++) {
    await adminApi('POST', `/v1/push/room/${ROOM}`, { payload: `load ${i}` });
    await new Promise((r) => setTimeout(r, 100));
  }
  await until('several polls', async () => (await page.evaluate(() => window.ringportDashboard.polls)) >= 6);
  const charts = ['chart-connections', 'chart-deliveries', 'chart-latency', 'chart-shards'];
  for (const id of charts) {
    await until(`points on ${id}`, async () => Number(await page.getAttribute(`#${id}`, 'data-points')) > 0);
    // Drawn pixels: more than the background and grid colours.
    const colours = await page.$eval(`#${id}`, (c) => {
      const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
      const seen = new Set();
      for (let i = 0; i < d.length; i += 4 * 7) seen.add(`${d[i]},${d[i + 1]},${d[i + 2]}`);
      return seen.size;
    });
    assert.ok(colours > 5, `${id}: ${colours} colours`);
  }
  const dash = await page.evaluate(() => window.ringportDashboard);
  assert.ok(dash.chartPoints['chart-deliveries'] > 0);
  // The numbers shown are the API's: the two demo pages, one room.
  const stats = await adminApi('GET', '/v1/stats');
  await until('the cards to show /v1/stats', async () => {
    const shown = await page.evaluate(() => ({
      active: document.getElementById('conn-active').textContent,
      rooms: document.getElementById('rooms').textContent,
      shards: document.getElementById('shards').textContent,
    }));
    return shown.active === String(stats.connections.active) && shown.rooms === String(stats.rooms)
      && shown.shards === String(stats.shards);
  });
  assert.equal(stats.connections.active, 2);
  assert.equal(stats.shards, 2);
  // Top rooms: the demo room with its two connections, as a table row and an SVG bar.
  const top = await page.$$eval('#top-rooms tr', (trs) => trs.map((tr) => [...tr.cells].map((c) => c.textContent)));
  assert.deepEqual(top, [[ROOM, '2']]);
  assert.equal(await page.$$eval('#rooms-bars rect', (r) => r.length), 1);
  const latency = await page.textContent('#latency-p99');
  assert.ok(latency, 'p99 card filled');

  // The inspector: room -> members -> one connection's details.
  await page.click(`#top-rooms a`);
  await until('the room members', async () => (await page.$$('#room-members a')).length === 2);
  await page.click('#room-members a');
  await until('the connection details', async () => (await page.textContent('#conn-details')).includes('active'));
  const details = await page.textContent('#conn-details');
  assert.match(details, /demo\.e2e/);
  assert.match(details, /guest-/);
  await page.screenshot({ path: path.join(ARTIFACTS, 'dashboard.png'), fullPage: true });
});
