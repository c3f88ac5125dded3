// The second generator for the presence fan-out (v3), of a different
// design from `switchboard bench fanout`: Node.js and `ws` instead of Rust
// and tungstenite, watchers held by worker processes that note arrival
// times on the machine's monotonic clock (shared by all processes), and
// its own target client driven by the parent.
//
// --watchers sessions (spread over the --url nodes) watch one client; the
// parent connects and disconnects that client --changes times, --gap-ms
// apart, on the first node. For each change: when each watcher got the
// frame with the new state; the last watcher's time; server CPU (/proc,
// --pids: the nodes, nats-server, redis-server) per frame.
//
//   node fanout.mjs --url ws://127.0.0.1:8081,ws://127.0.0.1:8082 \
//       --pids 1,2,3,4 --watchers 10000 --changes 20 --gap-ms 1200
//
// Prints one JSON object.

import { fork } from "node:child_process";
import { readFileSync } from "node:fs";
import WebSocket from "ws";

const opts = { url: "ws://127.0.0.1:8081,ws://127.0.0.1:8082", pids: "", watchers: 1000,
  changes: 10, "gap-ms": 1200, workers: 2, worker: -1, run: "" };
const argv = process.argv.slice(2);
for (let i = 0; i < argv.length; i += 2) {
  const key = argv[i].replace(/^--/, "");
  if (!(key in opts)) throw new Error(`unknown flag --${key}`);
  opts[key] = typeof opts[key] === "number" ? Number(argv[i + 1]) : argv[i + 1];
}
const urls = opts.url.split(",");
const nowUs = () => Number(process.hrtime.bigint() / 1000n); // CLOCK_MONOTONIC
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

if (opts.worker >= 0) {
  // A worker: its share of the watchers; notes each presence frame.
  const target = `nodefan-${opts.run}-target`;
  const seen = [];
  const sockets = [];
  const first = Math.floor((opts.watchers * opts.worker) / opts.workers);
  const last = Math.floor((opts.watchers * (opts.worker + 1)) / opts.workers);
  const open = (i) => new Promise((resolve, reject) => {
    const ws = new WebSocket(`${urls[i % urls.length]}/ws?client_id=nodefan-${opts.run}-w${i}`,
      { perMessageDeflate: false });
    ws.once("error", reject);
    let initial = false;
    ws.on("message", (data) => {
      const text = data.toString();
      if (text.startsWith('{"type":"welcome"')) {
        ws.send(JSON.stringify({ type: "watch", clients: [target], id: "w" }));
      } else if (text.startsWith('{"type":"presence"')) {
        if (!initial) {
          initial = true;
          resolve(ws);
          return;
        }
        seen.push([nowUs(), text.includes('"state":"online"') ? 1 : 0]);
      }
    });
  });
  for (let i = first; i < last; i += 128) {
    const batch = [];
    for (let j = i; j < Math.min(last, i + 128); j++) batch.push(open(j));
    sockets.push(...(await Promise.all(batch)));
  }
  process.send({ kind: "ready" });
  await new Promise((r) => process.on("message", (m) => m.kind === "stop" && r()));
  process.send({ kind: "seen", seen: seen.flat() }, () => {
    for (const ws of sockets) ws.terminate();
    process.exit(0);
  });
} else {
  const run = Math.random().toString(36).slice(2, 8);
  const pids = opts.pids ? opts.pids.split(",").map(Number) : [];
  const cpu = () => pids.reduce((sum, pid) => {
    try {
      const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
      const f = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
      return sum + (Number(f[11]) + Number(f[12])) / 100;
    } catch { return sum; }
  }, 0);
  const children = [];
  const seen = [];
  let ready = 0;
  const allReady = new Promise((resolve) => {
    for (let w = 0; w < opts.workers; w++) {
      const child = fork(new URL(import.meta.url).pathname,
        [...argv, "--worker", String(w), "--run", run]);
      child.on("message", (m) => {
        if (m.kind === "ready" && ++ready === opts.workers) resolve();
        if (m.kind === "seen") seen.push(m.seen);
      });
      children.push(child);
    }
  });
  await allReady;
  await sleep(opts["gap-ms"]);
  const cpuBefore = cpu();
  const changes = [];
  let target = null;
  for (let c = 0; c < opts.changes; c++) {
    const at = nowUs();
    if (!target) {
      target = await new Promise((resolve, reject) => {
        const ws = new WebSocket(`${urls[0]}/ws?client_id=nodefan-${run}-target`, { perMessageDeflate: false });
        ws.once("error", reject);
        ws.once("message", () => resolve(ws));
      });
      changes.push([at, 1]);
    } else {
      target.close(1000);
      target = null;
      changes.push([at, 0]);
    }
    await sleep(Math.max(0, opts["gap-ms"] - (nowUs() - at) / 1000));
  }
  const cpuAfter = cpu();
  const exited = children.map((c) => new Promise((r) => c.on("exit", r)));
  for (const c of children) c.send({ kind: "stop" });
  await Promise.all(exited);
  if (target) target.close(1000);

  const each = [];
  const lastPerChange = changes.map(() => 0);
  let frames = 0, missing = 0;
  // Per watcher process: flat [t, online, t, online, …] of all its watchers;
  // each watcher's frames are matched to the change whose window holds them.
  const arrivals = seen.flatMap((flat) => {
    const out = [];
    for (let i = 0; i < flat.length; i += 2) out.push([flat[i], flat[i + 1]]);
    return out;
  }).filter(([t]) => t >= changes[0][0]);
  frames = arrivals.length;
  for (let c = 0; c < changes.length; c++) {
    const [at, online] = changes[c];
    const until = c + 1 < changes.length ? changes[c + 1][0] : Infinity;
    const hits = arrivals.filter(([t, on]) => t >= at && t < until && on === online);
    missing += Math.max(0, opts.watchers - hits.length);
    for (const [t] of hits) {
      const took = (t - at) / 1000;
      each.push(took);
      lastPerChange[c] = Math.max(lastPerChange[c], took);
    }
  }
  each.sort((a, b) => a - b);
  const last = [...lastPerChange].sort((a, b) => a - b);
  const q = (xs, p) => (xs.length ? xs[Math.min(xs.length - 1, Math.floor(p * xs.length))] : 0);
  console.log(JSON.stringify({
    generator: "node-fanout",
    watchers: opts.watchers,
    changes: changes.length,
    frames,
    missing,
    p50_ms: q(each, 0.5), p99_ms: q(each, 0.99),
    last_watcher_ms: { p50: q(last, 0.5), p99: q(last, 0.99), max: last[last.length - 1] },
    server_cpu_us_per_frame: frames ? ((cpuAfter - cpuBefore) * 1e6) / frames : 0,
  }));
  process.exit(0);
}
