// A second load generator, of a different design from `switchboard bench`,
// to check its figures: JavaScript on Node.js instead of Rust on tokio, one
// central scheduler (a binary heap of every client's next send time, served
// by one timer) instead of a task per client, the `ws` library instead of
// tungstenite, and its own Poisson arrivals and clock.
//
// Each of --clients clients (in pairs, the two of a pair on different
// nodes) sends to its partner at the times of its own Poisson process, the
// whole offered --rate together. Latency runs from the *intended* send
// time to receipt. Server CPU is read from /proc for --pids (the nodes,
// nats-server, redis-server) over the measured window.
//
//   cd scripts/loadgen && npm ci
//   node loadgen.mjs --url ws://127.0.0.1:8081,ws://127.0.0.1:8082 \
//       --pids 123,456,789 --clients 500 --rate 2000 --duration 10
//
// Prints one JSON object: offered and delivered rates, p50/p90/p99 (ms),
// server CPU µs per delivered message, burstiness (CV of sends per ms).
// `--kind signal` sends signals (v3) instead of messages.
//
// `--proto socketio` drives the Socket.IO chat server of
// socketio-server.mjs instead (--url http://…), with socket.io-client:
// the same clients, arrivals and clock, for a comparison on one run. Each
// send asks for Socket.IO's acknowledgement, as every Switchboard send is
// acked; `--ack 0` sends without (fire and forget, which Switchboard has
// no counterpart of), to show what the ack costs the comparison.
// `--node-pids` (a subset of --pids: the nodes alone) adds their own CPU
// per message beside the whole servers'.
//
// With --workers N (default 2, one per core), N processes each drive
// 1/N of the clients (whole pairs) and the first merges their samples:
// one JavaScript thread reading 20,000 frames a second would otherwise
// add its own event-loop delay to every latency it measures.

import { fork } from "node:child_process";
import { readFileSync } from "node:fs";
import { io as socketio } from "socket.io-client";
import WebSocket from "ws";

function args() {
  const out = { url: "ws://127.0.0.1:8081,ws://127.0.0.1:8082", pids: "", clients: 500,
    rate: 2000, duration: 10, warmup: 2, payload: 100, workers: 2, worker: -1, kind: "message",
    proto: "switchboard", "node-pids": "", ack: 1 };
  const argv = process.argv.slice(2);
  for (let i = 0; i < argv.length; i += 2) {
    const key = argv[i].replace(/^--/, "");
    if (!(key in out)) throw new Error(`unknown flag --${key}`);
    out[key] = typeof out[key] === "number" ? Number(argv[i + 1]) : argv[i + 1];
  }
  out.urls = out.url.split(",");
  out.pidList = out.pids ? out.pids.split(",").map(Number) : [];
  out.nodePidList = out["node-pids"] ? out["node-pids"].split(",").map(Number) : [];
  if (!["switchboard", "socketio"].includes(out.proto)) {
    throw new Error("--proto is switchboard or socketio");
  }
  if (out.proto === "socketio" && out.kind !== "message") {
    throw new Error("the Socket.IO server passes messages only (--kind message)");
  }
  return out;
}

const opts = args();
const epoch = process.hrtime.bigint();
const nowUs = () => Number((process.hrtime.bigint() - epoch) / 1000n);
const TICKS = 100; // clock ticks per second, /proc's unit

function cpuSeconds(pids) {
  let ticks = 0;
  for (const pid of pids) {
    try {
      const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
      const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
      ticks += Number(fields[11]) + Number(fields[12]); // utime, stime
    } catch {
      // a process that is gone counts nothing
    }
  }
  return ticks / TICKS;
}

// xorshift32: each client's own generator, seeded from its index.
function generator(seed) {
  let x = (seed * 2654435761) >>> 0 || 1;
  return () => {
    x ^= x << 13; x >>>= 0;
    x ^= x >>> 17;
    x ^= x << 5; x >>>= 0;
    return (x + 1) / 4294967297;
  };
}

// A binary min-heap of [due µs, client index].
class Heap {
  constructor() { this.items = []; }
  push(item) {
    const a = this.items; a.push(item);
    let i = a.length - 1;
    while (i > 0) {
      const p = (i - 1) >> 1;
      if (a[p][0] <= a[i][0]) break;
      [a[p], a[i]] = [a[i], a[p]]; i = p;
    }
  }
  peek() { return this.items[0]; }
  pop() {
    const a = this.items; const top = a[0]; const last = a.pop();
    if (a.length > 0) {
      a[0] = last;
      let i = 0;
      for (;;) {
        const l = 2 * i + 1, r = l + 1; let m = i;
        if (l < a.length && a[l][0] < a[m][0]) m = l;
        if (r < a.length && a[r][0] < a[m][0]) m = r;
        if (m === i) break;
        [a[m], a[i]] = [a[i], a[m]]; i = m;
      }
    }
    return top;
  }
}

const isWorker = opts.worker >= 0;
if (!isWorker) {
  // The parent: forks the workers, waits for their samples, merges them.
  const cpu = { start: 0, end: 0, started: 0, ended: 0, ends: 0, nodesStart: 0, nodesEnd: 0 };
  const children = [];
  const results = [];
  let ready = 0;
  for (let w = 0; w < opts.workers; w++) {
    const child = fork(new URL(import.meta.url).pathname, [...process.argv.slice(2), "--worker", String(w)]);
    children.push(child);
    child.on("message", (msg) => {
      // Server CPU over the measured window: from the first worker's start
      // to the last worker's end.
      if (msg.kind === "ready" && ++ready === opts.workers) {
        // Every client is connected: all start together.
        for (const c of children) c.send({ kind: "go" });
      } else if (msg.kind === "window-start" && !cpu.started) {
        cpu.start = cpuSeconds(opts.pidList);
        cpu.nodesStart = cpuSeconds(opts.nodePidList);
        cpu.started = nowUs();
      } else if (msg.kind === "window-end" && ++cpu.ends === opts.workers) {
        cpu.end = cpuSeconds(opts.pidList);
        cpu.nodesEnd = cpuSeconds(opts.nodePidList);
        cpu.ended = nowUs();
      } else if (msg.kind === "result") results.push(msg);
    });
  }
  await Promise.all(children.map((c) => new Promise((r) => c.on("exit", r))));
  const serverCpu = cpu.end - cpu.start;
  const nodesCpu = cpu.nodesEnd - cpu.nodesStart;
  const window = (cpu.ended - cpu.started) / 1e6;
  const latencies = results.flatMap((r) => r.latencies).sort((a, b) => a - b);
  const sum = (k) => results.reduce((a, r) => a + r[k], 0);
  const elapsed = Math.max(...results.map((r) => r.elapsed));
  const received = sum("received");
  const q = (p) => (latencies.length ? latencies[Math.min(latencies.length - 1, Math.floor(p * latencies.length))] / 1000 : 0);
  console.log(JSON.stringify({
    generator: "node-loadgen",
    proto: opts.proto,
    ack: opts.proto === "switchboard" || opts.ack === 1,
    kind: opts.kind,
    workers: opts.workers,
    clients: opts.clients,
    offered_rate: opts.rate,
    sent: sum("sent"),
    received,
    delivered_rate: received / elapsed,
    p50_ms: q(0.5), p90_ms: q(0.9), p99_ms: q(0.99),
    server_cpu_us_per_msg: received ? (serverCpu * 1e6) / received : 0,
    nodes_cpu_us_per_msg: received ? (nodesCpu * 1e6) / received : 0,
    server_cores: serverCpu / window,
    generator_cores: sum("generatorCpu") / elapsed,
    burstiness_per_worker: Math.max(...results.map((r) => r.burstiness)),
  }));
  process.exit(0);
}

const run = Math.random().toString(36).slice(2, 8);
// {"type":"message"... : the 10th byte tells a message (or a signal:
// "s") from an ack.
const SIGNALS = opts.kind === "signal";
const MESSAGE_M = (SIGNALS ? "s" : "m").charCodeAt(0);
const FRAME_TYPE = SIGNALS ? "signal" : "send";
const STAMP = Buffer.from('"t":');
const W = '"'.charCodeAt(0);
// The measured window: sends before it carry 0, after it 2.
const MEASURED = 1;
const name = (i) => `nodegen-${run}-${i}`;
const padding = "x".repeat(opts.payload);
let measuring = false;
let window = 0;
const latencies = [];
let sent = 0, received = 0;
let windowStart = 0;
let perMs = new Uint32Array(1);

// A message that arrived, as Socket.IO hands it over (parsed already).
function arrived(message) {
  const body = message && message.body;
  if (!measuring || !body || body.w !== MEASURED) return;
  latencies.push(nowUs() - body.t);
  received += 1;
}

function connect(i) {
  const pair = i >> 1;
  const url = opts.urls[(pair + (i & 1)) % opts.urls.length];
  if (opts.proto === "socketio") {
    return new Promise((resolve, reject) => {
      const socket = socketio(url, {
        transports: ["websocket"],
        query: { client_id: name(i) },
        reconnection: false,
        forceNew: true,
      });
      socket.once("connect_error", reject);
      socket.once("connect", () => resolve(socket));
      socket.on("message", arrived);
    });
  }
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(`${url}/ws?client_id=${name(i)}`, {
      perMessageDeflate: false,
      skipUTF8Validation: true,
    });
    ws.once("error", reject);
    ws.once("message", () => resolve(ws)); // the welcome
    ws.on("message", (data) => {
      // Only message frames count, and only their stamp is read: a
      // generator that parses everything measures its own parsing.
      if (!measuring || data[9] !== MESSAGE_M) return;
      const at = data.indexOf(STAMP);
      if (at < 0) return;
      let i = at + STAMP.length, t = 0;
      while (data[i] >= 48 && data[i] <= 57) t = t * 10 + (data[i++] - 48);
      if (data[i + 1] !== W || data[i + 5] - 48 !== MEASURED) return; // ,"w":1
      latencies.push(nowUs() - t);
      received += 1;
    });
  });
}

// This worker's share: whole pairs, so that a client's partner is here.
const pairs = opts.clients / 2;
const firstPair = Math.floor((pairs * opts.worker) / opts.workers);
const lastPair = Math.floor((pairs * (opts.worker + 1)) / opts.workers);
const mine = [];
for (let p = firstPair; p < lastPair; p++) mine.push(2 * p, 2 * p + 1);
const clients = [];
for (let i = 0; i < mine.length; i += 64) {
  clients.push(...(await Promise.all(mine.slice(i, i + 64).map(connect))));
}
const global = (local) => mine[local];

// Every worker connects first; the parent then starts them together.
process.send({ kind: "ready" });
await new Promise((resolve) => process.on("message", (msg) => msg.kind === "go" && resolve()));

const perClient = opts.rate / opts.clients; // sends per second each
const rngs = clients.map((_, i) => generator(global(i) + 1 + Date.now() % 1000));
const gapUs = (i) => (-Math.log(rngs[i]()) / perClient) * 1e6;
const heap = new Heap();
let sending = true;

function schedule() {
  if (!sending) return;
  const now = nowUs();
  while (heap.peek() && heap.peek()[0] <= now) {
    const [due, i] = heap.pop();
    const partner = global(i) ^ 1;
    if (opts.proto === "socketio") {
      const body = { t: Math.floor(due), w: window, p: padding };
      if (opts.ack) clients[i].emit("send", { to: name(partner), body }, () => {});
      else clients[i].emit("send", { to: name(partner), body });
    } else {
      clients[i].send(`{"type":"${FRAME_TYPE}","to":"${name(partner)}","body":{"t":${Math.floor(due)},"w":${window},"p":"${padding}"}}`);
    }
    if (measuring) {
      sent += 1;
      const ms = Math.floor((now - windowStart) / 1000);
      if (ms < perMs.length) perMs[ms] += 1;
    }
    heap.push([due + gapUs(i), i]);
  }
  const next = heap.peek();
  setTimeout(schedule, Math.max(0, (next[0] - nowUs()) / 1000));
}

const start = nowUs();
clients.forEach((_, i) => heap.push([start + gapUs(i), i]));
schedule();

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
await sleep(opts.warmup * 1000);
window = 1;
windowStart = nowUs();
perMs = new Uint32Array(Math.ceil(opts.duration * 1000));
measuring = true;
process.send({ kind: "window-start" });
const t0 = nowUs();
const cpu0 = process.cpuUsage();
await sleep(opts.duration * 1000);
process.send({ kind: "window-end" });
const elapsed = (nowUs() - t0) / 1e6;
// The generator's own CPU: it shares the machine with the servers, so a
// heavier client library (Socket.IO's) leaves them less.
const used = process.cpuUsage(cpu0);
const generatorCpu = (used.user + used.system) / 1e6;
const sentInWindow = sent;
// What is sent from now on is not the window's; let the window's last
// messages arrive, then stop counting.
window = 2;
for (let i = 0; i < 60 && received < sentInWindow; i++) await sleep(50);
measuring = false;
sending = false;

const mean = perMs.reduce((a, b) => a + b, 0) / perMs.length;
const variance = perMs.reduce((a, b) => a + (b - mean) ** 2, 0) / perMs.length;
// Exit only once the samples are through the pipe to the parent.
process.send(
  {
    kind: "result",
    sent: sentInWindow,
    received,
    elapsed,
    generatorCpu,
    latencies,
    burstiness: mean ? Math.sqrt(variance) / mean : 0,
  },
  () => {
    for (const client of clients) {
      if (opts.proto === "socketio") client.disconnect();
      else client.close(1000);
    }
    process.disconnect();
    process.exit(0);
  },
);
