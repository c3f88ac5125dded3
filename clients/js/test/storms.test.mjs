// Storms (v3): a busy node's Retry-After is honoured, and a draining
// node's reconnect hint is followed. Real node processes.
import { test } from "node:test";
import assert from "node:assert/strict";
import WebSocket from "ws";
import { connect } from "../dist/index.js";
import { startNode, startRedis, startNats, next, EVENT_TIMEOUT } from "./support.mjs";

const CLIENTS = 50;
const RATE = 5;
/** 45 clients over the rate at 5/s is 9 s of backlog; each refused client
 * waits at most backlog + 2 s, and is rarely refused twice. */
const ALL_IN_WITHIN_MS = 25_000;

test("a busy node's Retry-After is never undercut, and everyone gets in", { timeout: 60_000 }, async (t) => {
  const node = await startNode(t, ["--max-connect-rate", String(RATE)]);
  // Per client: every attempt's time, and every refusal's not-before.
  const attempts = Array.from({ length: CLIENTS }, () => []);
  const refusals = Array.from({ length: CLIENTS }, () => []);
  const socketFor = (i) =>
    class Recording extends WebSocket {
      constructor(url) {
        super(url);
        attempts[i].push(Date.now());
        this.on("unexpected-response", (_req, res) => {
          assert.equal(res.statusCode, 503);
          const seconds = Number(res.headers["retry-after"]);
          assert.ok(seconds >= 1 && seconds <= 60, `Retry-After ${res.headers["retry-after"]}`);
          refusals[i].push(Date.now() + seconds * 1000);
        });
      }
    };
  const started = Date.now();
  const clients = attempts.map((_, i) =>
    connect({ url: node.url, clientId: `storm${i}`, acks: false, WebSocket: socketFor(i), reconnect: { initialDelayMs: 50 } }),
  );
  t.after(() => clients.forEach((c) => c.close()));
  // A busy node is a healthy one: /readyz stays 200 meanwhile.
  const ready = await fetch(`${node.http}/readyz`);
  assert.equal(ready.status, 200);
  const welcomed = await Promise.race([
    Promise.all(clients.map((c) => c.ready())),
    new Promise((_, reject) => setTimeout(() => reject(new Error("not everyone got in")), ALL_IN_WITHIN_MS)),
  ]);
  const took = Date.now() - started;
  assert.equal(welcomed.length, CLIENTS);
  let refused = 0;
  for (let i = 0; i < CLIENTS; i++) {
    refused += refusals[i].length;
    assert.equal(attempts[i].length, refusals[i].length + 1, `client ${i}: one attempt per refusal, then in`);
    for (let k = 0; k < refusals[i].length; k++) {
      // Timers fire late, never early; 5 ms of clock granularity.
      assert.ok(attempts[i][k + 1] >= refusals[i][k] - 5, `client ${i} retried ${refusals[i][k] - attempts[i][k + 1]} ms before its Retry-After`);
    }
  }
  assert.ok(refused >= CLIENTS - 2 * RATE, `the rate held: ${refused} refusals`);
  const metrics = await (await fetch(`${node.http}/metrics`)).text();
  assert.match(metrics, new RegExp(`switchboard_upgrades_refused_total\\{reason="busy"\\} ${refused}\\b`));
  console.log(`storm: ${CLIENTS} clients at --max-connect-rate ${RATE}: all in after ${took} ms, ${refused} refusals`);
});

test("a draining node's reconnect hint is followed", { timeout: 60_000 }, async (t) => {
  const redis = await startRedis(t);
  const nats = await startNats(t);
  const flags = ["--redis-url", redis, "--nats-url", nats.url, "--resume-secret", "s", "--drain-spread-ms", "1500"];
  const a = await startNode(t, [...flags, "--node-id", "hint-a"]);
  const b = await startNode(t, [...flags, "--node-id", "hint-b"]);
  // Each client's first URL is a; after the drain it tries b.
  const clients = Array.from({ length: 10 }, (_, i) => {
    let first = true;
    class ToB extends WebSocket {
      constructor(url) {
        super(first ? url : url.replace(a.url, b.url));
        first = false;
      }
    }
    return connect({ url: a.url, clientId: `hint${i}`, WebSocket: ToB, reconnect: { initialDelayMs: 10, maxDelayMs: 20 } });
  });
  t.after(() => clients.forEach((c) => c.close()));
  await Promise.all(clients.map((c) => c.ready()));
  const hints = clients.map((c) =>
    new Promise((resolve) => {
      const stop = c.on("disconnect", ({ code, reason }) => {
        stop();
        resolve({ code, hint: Number(/reconnect_after_ms=(\d+)/.exec(reason)?.[1]), at: Date.now() });
      });
    }),
  );
  const back = clients.map((c) => next(c, "welcome").then((w) => ({ w, at: Date.now() })));
  const drained = a.stop();
  const seen = await Promise.all(hints);
  const returned = await Promise.all(back.map((p) => Promise.race([p, new Promise((_, r) => setTimeout(() => r(new Error("no return")), EVENT_TIMEOUT))])));
  await drained;
  for (let i = 0; i < clients.length; i++) {
    assert.equal(seen[i].code, 1001);
    assert.ok(seen[i].hint >= 0 && seen[i].hint < 1500, `hint ${seen[i].hint}`);
    const waited = returned[i].at - seen[i].at;
    assert.ok(waited >= seen[i].hint - 5, `client ${i} came back after ${waited} ms, hint ${seen[i].hint}`);
    assert.equal(returned[i].w.resumed, true, "resumed on the other node");
  }
  const distinct = new Set(seen.map((s) => s.hint)).size;
  assert.ok(distinct >= 8, `hints spread: ${seen.map((s) => s.hint)}`);
});
