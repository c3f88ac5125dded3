// Memory per idle connection of one server process, the same way for a
// Switchboard node and a Socket.IO node (socketio-server.mjs): its RSS
// before, then with --sessions connections open and quiet, divided by
// --sessions. The second reading is taken once the RSS has settled (two
// readings 500 ms apart within 1 %, 10 s at most), so that memory still
// being touched or collected is not counted either way.
//
//   node idle.mjs --proto switchboard --url ws://127.0.0.1:8081 --pid 123 --sessions 8000
//   node idle.mjs --proto socketio --url http://127.0.0.1:9001 --pid 456 --sessions 8000
//
// Prints one JSON object.

import { readFileSync } from "node:fs";
import { io as socketio } from "socket.io-client";
import WebSocket from "ws";

function args() {
  const out = { proto: "switchboard", url: "ws://127.0.0.1:8081", pid: 0, sessions: 8000 };
  const argv = process.argv.slice(2);
  for (let i = 0; i < argv.length; i += 2) {
    const key = argv[i].replace(/^--/, "");
    if (!(key in out)) throw new Error(`unknown flag --${key}`);
    out[key] = typeof out[key] === "number" ? Number(argv[i + 1]) : argv[i + 1];
  }
  if (!["switchboard", "socketio"].includes(out.proto)) {
    throw new Error("--proto is switchboard or socketio");
  }
  if (!out.pid) throw new Error("--pid: the server process to measure");
  return out;
}

const opts = args();
const run = Math.random().toString(36).slice(2, 8);
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

function rssKiB(pid) {
  const status = readFileSync(`/proc/${pid}/status`, "utf8");
  return Number(/VmRSS:\s+(\d+) kB/.exec(status)[1]);
}

async function settledRss(pid) {
  let last = rssKiB(pid);
  for (let i = 0; i < 20; i++) {
    await sleep(500);
    const now = rssKiB(pid);
    if (Math.abs(now - last) <= last / 100) return now;
    last = now;
  }
  return last;
}

function connect(i) {
  const id = `idle-${run}-${i}`;
  return new Promise((resolve, reject) => {
    if (opts.proto === "socketio") {
      const socket = socketio(opts.url, {
        transports: ["websocket"],
        query: { client_id: id },
        reconnection: false,
        forceNew: true,
      });
      socket.once("connect_error", reject);
      socket.once("connect", () => resolve(socket));
    } else {
      const ws = new WebSocket(`${opts.url}/ws?client_id=${id}`, { perMessageDeflate: false });
      ws.once("error", reject);
      ws.once("message", () => resolve(ws)); // the welcome
    }
  });
}

const before = await settledRss(opts.pid);
const clients = [];
for (let i = 0; i < opts.sessions; i += 64) {
  const batch = [];
  for (let j = i; j < Math.min(i + 64, opts.sessions); j++) batch.push(connect(j));
  clients.push(...(await Promise.all(batch)));
}
const after = await settledRss(opts.pid);
console.log(JSON.stringify({
  proto: opts.proto,
  sessions: opts.sessions,
  rss_before_mib: +(before / 1024).toFixed(1),
  rss_after_mib: +(after / 1024).toFixed(1),
  kib_per_session: +((after - before) / opts.sessions).toFixed(2),
}));
for (const client of clients) {
  if (opts.proto === "socketio") client.disconnect();
  else client.close(1000);
}
await sleep(200);
process.exit(0);
