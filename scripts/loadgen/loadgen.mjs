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

import { readFileSync } from "node:fs";
import WebSocket from "ws";

function args() {
  const out = { url: "ws://127.0.0.1:8081,ws://127.0.0.1:8082", pids: "", clients: 500,
    rate: 2000, duration: 10, warmup: 2, payload: 100 };
  const argv = process.argv.slice(2);
  for (let i = 0; i < argv.length; i += 2) {
    const key = argv[i].replace(/^--/, "");
    if (!(key in out)) throw new Error(`unknown flag --${key}`);
    out[key] = typeof out[key] === "number" ? Number(argv[i + 1]) : argv[i + 1];
  }
  out.urls = out.url.split(",");
  out.pidList = out.pids ? out.pids.split(",").map(Number) : [];
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

const run = Math.random().toString(36).slice(2, 8);
const name = (i) => `nodegen-${run}-${i}`;
const padding = "x".repeat(opts.payload);
let measuring = false;
let window = 0;
const latencies = [];
let sent = 0, received = 0;
let windowStart = 0;
let perMs = new Uint32Array(1);

function connect(i) {
  const pair = i >> 1;
  const url = opts.urls[(pair + (i & 1)) % opts.urls.length];
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(`${url}/ws?client_id=${name(i)}`);
    ws.once("error", reject);
    ws.once("message", () => resolve(ws)); // the welcome
    ws.on("message", (data) => {
      const text = data.toString();
      if (!text.startsWith('{"type":"message"') && !text.startsWith('{"type":"send"')) return;
      const m = /"t":(\d+),"w":(\d+)/.exec(text);
      if (!m || Number(m[2]) !== window || !measuring) return;
      latencies.push(nowUs() - Number(m[1]));
      received += 1;
    });
  });
}

const clients = [];
for (let i = 0; i < opts.clients; i += 64) {
  const batch = [];
  for (let j = i; j < Math.min(i + 64, opts.clients); j++) batch.push(connect(j));
  clients.push(...(await Promise.all(batch)));
}

const perClient = opts.rate / opts.clients; // sends per second each
const rngs = clients.map((_, i) => generator(i + 1 + Date.now() % 1000));
const gapUs = (i) => (-Math.log(rngs[i]()) / perClient) * 1e6;
const heap = new Heap();
let sending = true;

function schedule() {
  if (!sending) return;
  const now = nowUs();
  while (heap.peek() && heap.peek()[0] <= now) {
    const [due, i] = heap.pop();
    const partner = i ^ 1;
    clients[i].send(`{"type":"send","to":"${name(partner)}","body":{"t":${due},"w":${window},"p":"${padding}"}}`);
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
const cpuBefore = cpuSeconds(opts.pidList);
const t0 = nowUs();
await sleep(opts.duration * 1000);
const cpuAfter = cpuSeconds(opts.pidList);
const elapsed = (nowUs() - t0) / 1e6;
const sentInWindow = sent;
// Let the window's last messages arrive, then stop counting.
for (let i = 0; i < 60 && received < sentInWindow; i++) await sleep(50);
measuring = false;
sending = false;

latencies.sort((a, b) => a - b);
const q = (p) => (latencies.length ? latencies[Math.min(latencies.length - 1, Math.floor(p * latencies.length))] / 1000 : 0);
const mean = perMs.reduce((a, b) => a + b, 0) / perMs.length;
const variance = perMs.reduce((a, b) => a + (b - mean) ** 2, 0) / perMs.length;
const result = {
  generator: "node-loadgen",
  clients: opts.clients,
  offered_rate: opts.rate,
  sent: sentInWindow,
  received,
  delivered_rate: received / elapsed,
  p50_ms: q(0.5), p90_ms: q(0.9), p99_ms: q(0.99),
  server_cpu_us_per_msg: received ? ((cpuAfter - cpuBefore) * 1e6) / received : 0,
  server_cores: (cpuAfter - cpuBefore) / elapsed,
  burstiness: mean ? Math.sqrt(variance) / mean : 0,
};
console.log(JSON.stringify(result));
for (const ws of clients) ws.close(1000);
process.exit(0);
