// The test kit: real switchboard, redis-server and nats-server processes
// on free loopback ports, stopped when the test ends.
import { spawn } from "node:child_process";
import { createHmac } from "node:crypto";
import { existsSync } from "node:fs";
import net from "node:net";
import path from "node:path";
import { fileURLToPath } from "node:url";
import WebSocket from "ws";
import { connect as connectClient } from "../dist/index.js";

const here = path.dirname(fileURLToPath(import.meta.url));
const repo = path.resolve(here, "../../..");

/** The node binary: $SWITCHBOARD_BIN, or the workspace's debug build. */
export const BIN =
  process.env.SWITCHBOARD_BIN ?? path.join(repo, "target/debug/switchboard");
if (!existsSync(BIN)) {
  throw new Error(`${BIN} not found: run \`cargo build\` first (or set SWITCHBOARD_BIN)`);
}

function which(name) {
  for (const dir of [...(process.env.PATH ?? "").split(":"), "/usr/sbin", "/usr/local/sbin"]) {
    const file = path.join(dir, name);
    if (existsSync(file)) return file;
  }
  throw new Error(`${name} not found: run scripts/install-deps.sh`);
}

/** How long a test waits for any one event. */
export const EVENT_TIMEOUT = 10_000;

export async function freePort() {
  return new Promise((resolve, reject) => {
    const server = net.createServer();
    server.listen(0, "127.0.0.1", () => {
      const { port } = server.address();
      server.close(() => resolve(port));
    });
    server.on("error", reject);
  });
}

async function waitPort(port, what) {
  const deadline = Date.now() + EVENT_TIMEOUT;
  while (Date.now() < deadline) {
    const open = await new Promise((resolve) => {
      const socket = net.connect(port, "127.0.0.1");
      socket.once("connect", () => {
        socket.destroy();
        resolve(true);
      });
      socket.once("error", () => resolve(false));
    });
    if (open) return;
    await new Promise((r) => setTimeout(r, 25));
  }
  throw new Error(`${what} did not open port ${port}`);
}

/** A child process stopped (SIGKILL unless stopped already) when `t` ends. */
function child(t, command, args, port, what) {
  const inherit = process.env.SB_TEST_LOG ? "inherit" : "pipe";
  const proc = spawn(command, args, { stdio: ["ignore", inherit, inherit] });
  // The node logs to stdout; servers complain on stderr: keep the end
  // of both for a failing test's message.
  let stderr = "";
  const keep = (d) => {
    stderr = (stderr + d).slice(-20000);
  };
  proc.stdout?.on("data", keep);
  proc.stderr?.on("data", keep);
  const exited = new Promise((resolve) => proc.once("exit", resolve));
  t.after(async () => {
    proc.kill("SIGKILL");
    await exited;
  });
  return {
    proc,
    port,
    exited,
    stderr: () => stderr,
    // A process that exits first did not start (its port taken, say):
    // something else answering on the port must not pass for it.
    ready: () =>
      Promise.race([
        waitPort(port, what),
        exited.then((code) => {
          throw new Error(`${what} exited (${code}) before opening port ${port}: ${stderr}`);
        }),
      ]),
  };
}

export async function startRedis(t) {
  const port = await freePort();
  const redis = child(t, which("redis-server"), ["--port", String(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"], port, "redis-server");
  await redis.ready();
  return `redis://127.0.0.1:${port}`;
}

/** A nats-server: its URL, and `kill()` to take it away mid-test. */
export async function startNats(t) {
  const port = await freePort();
  const nats = child(t, which("nats-server"), ["-a", "127.0.0.1", "-p", String(port)], port, "nats-server");
  await nats.ready();
  return {
    url: `nats://127.0.0.1:${port}`,
    async kill() {
      nats.proc.kill("SIGKILL");
      await nats.exited;
    },
  };
}

/** The example hook backend (examples/hook-backend/server.py): its URL. */
export async function startHookBackend(t, secret, flags = []) {
  const port = await freePort();
  const script = path.join(repo, "examples/hook-backend/server.py");
  const backend = child(t, "python3", [script, "--port", String(port), "--secret", secret, ...flags], port, "the hook backend");
  await backend.ready();
  return `http://127.0.0.1:${port}/hook`;
}

/** Starts a node; `options.port` to reuse an address. Returns
 * `{url, http, port, stop()}` (`stop` drains it with SIGTERM). */
export async function startNode(t, flags = [], options = {}) {
  const port = options.port ?? (await freePort());
  const log = flags.includes("--log") ? [] : ["--log", process.env.SB_TEST_LOG ?? "warn"];
  const node = child(t, BIN, ["serve", "--listen", `127.0.0.1:${port}`, ...log, ...flags], port, "switchboard");
  try {
    await node.ready();
  } catch (e) {
    throw new Error(`${e.message}\n${node.stderr()}`);
  }
  return {
    port,
    url: `ws://127.0.0.1:${port}`,
    http: `http://127.0.0.1:${port}`,
    /** The last of its log, for a failing test's message. */
    log: () => node.stderr(),
    async stop() {
      node.proc.kill("SIGTERM");
      await node.exited;
    },
  };
}

/** A client on `ws`, torn down with the test. */
export function open(t, options) {
  const client = connectClient({ WebSocket, ...options });
  t.after(() => client.close());
  return client;
}

/** The next `event` the client emits (within EVENT_TIMEOUT). */
export function next(client, event, accept = () => true) {
  return within(
    new Promise((resolve) => {
      const stop = client.on(event, (value) => {
        if (accept(value)) {
          stop();
          resolve(value);
        }
      });
    }),
    `no ${event}`,
  );
}

/** Collects the `message`s a client gets. */
export function inbox(client) {
  const messages = [];
  client.on("message", (m) => messages.push(m));
  return messages;
}

export async function within(promise, what = "timed out") {
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(what)), EVENT_TIMEOUT);
  });
  try {
    return await Promise.race([promise, timeout]);
  } finally {
    clearTimeout(timer);
  }
}

/** Waits until `check()` holds (for state with no event to wait on). */
export async function eventually(what, check) {
  const deadline = Date.now() + EVENT_TIMEOUT;
  while (Date.now() < deadline) {
    if (await check()) return;
    await new Promise((r) => setTimeout(r, 20));
  }
  throw new Error(`timed out waiting until ${what}`);
}

/** An HS256 JWT for `sub`, valid `seconds`. */
export function token(secret, sub, seconds = 3600) {
  const b64 = (v) => Buffer.from(JSON.stringify(v)).toString("base64url");
  const head = `${b64({ alg: "HS256", typ: "JWT" })}.${b64({ sub, exp: Math.floor(Date.now() / 1000) + seconds })}`;
  const sig = createHmac("sha256", secret).update(head).digest("base64url");
  return `${head}.${sig}`;
}

/** An HTTP call to the node's API. */
export async function api(node, method, pathname, key, body) {
  const response = await fetch(`${node.http}${pathname}`, {
    method,
    headers: { authorization: `Bearer ${key}`, "content-type": "application/json" },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  return { status: response.status, body: await response.text() };
}
