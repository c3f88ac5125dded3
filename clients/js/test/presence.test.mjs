// Presence for clients and signals (v3) in switchboard-client, against a
// real node: watch and presence events, invisibility, signals, typed
// errors, and watches that outlive a session.
import assert from "node:assert/strict";
import { test } from "node:test";
import { TooManyWatched, connect } from "../dist/index.js";
import WebSocket from "ws";
import { next, open, startNode, within } from "./support.mjs";

test("watch answers, then presence follows devices; presenceOf keeps the last", { timeout: 30_000 }, async (t) => {
  const node = await startNode(t, ["--presence-coalesce-ms", "50"]);
  const alice = open(t, { url: node.url, clientId: "alice" });
  await alice.ready();
  const first = next(alice, "presence");
  const watching = await alice.watch(["bob"]);
  assert.deepEqual(watching, { clients: ["bob"], denied: [] });
  const offline = await first;
  assert.equal(offline.state, "offline");
  assert.deepEqual(offline.devices, []);

  const online = next(alice, "presence", (p) => p.devices.length === 2);
  const bob = open(t, { url: node.url, clientId: "bob", device: "phone" });
  const laptop = open(t, { url: node.url, clientId: "bob", device: "laptop" });
  await Promise.all([bob.ready(), laptop.ready()]);
  const both = await online;
  assert.deepEqual(both.devices, ["laptop", "phone"], "sorted");
  assert.deepEqual(alice.presenceOf("bob"), both);

  const gone = next(alice, "presence", (p) => p.state === "offline");
  bob.close();
  laptop.close();
  const last = await gone;
  assert.ok(last.last_seen > 0, "last_seen once seen");

  // Unwatched: nothing more about bob.
  await alice.unwatch(["bob"]);
  assert.equal(alice.presenceOf("bob"), undefined);
  // close() tells what the socket reported: the node echoes 1000.
  assert.deepEqual(await within(alice.close()), { code: 1000, reason: "" });
  assert.equal(await alice.close(), null, "closed already");
});

test("invisible looks offline to watchers; signals arrive and need no answer", { timeout: 30_000 }, async (t) => {
  const node = await startNode(t, ["--presence-coalesce-ms", "50"]);
  const alice = open(t, { url: node.url, clientId: "alice" });
  const bob = open(t, { url: node.url, clientId: "bob" });
  await Promise.all([alice.ready(), bob.ready()]);
  const shown = next(alice, "presence");
  await alice.watch(["bob"]);
  assert.equal((await shown).state, "online");

  const hidden = next(alice, "presence");
  await bob.setVisible(false);
  const p = await hidden;
  assert.equal(p.state, "offline");
  assert.ok(p.last_seen > 0, "the moment it went invisible");
  const back = next(alice, "presence");
  await bob.setVisible(true);
  assert.equal((await back).state, "online");

  const typing = next(bob, "signal");
  assert.equal(alice.signal("bob", { typing: true }), true);
  const s = await typing;
  assert.deepEqual([s.from, s.to, s.body], ["alice", "bob", { typing: true }]);
  const seen = [];
  bob.onSignal((frame) => seen.push(frame));
  // A signal to a group this client is not in: dropped without a word,
  // and the session goes on.
  assert.equal(alice.signalGroup("nobody-here", { typing: true }), true);
  await alice.ping();
  assert.deepEqual(seen, []);
});

test("too many watched is typed; watches come back with a new session", { timeout: 30_000 }, async (t) => {
  const flags = ["--max-watched", "2", "--presence-coalesce-ms", "50"];
  const node = await startNode(t, flags);
  const alice = open(t, {
    url: node.url,
    clientId: "alice",
    acks: false,
    reconnect: { initialDelayMs: 50, maxDelayMs: 200 },
  });
  await alice.ready();
  await assert.rejects(alice.watch(["a", "b", "c"]), TooManyWatched);
  await alice.watch(["bob"]);
  // The node restarts: a fresh session (no acks mode, nothing resumed)
  // watches bob again by itself, and shows him online once he is back.
  await node.stop();
  const again = await startNode(t, flags, { port: node.port });
  const welcomed = next(alice, "welcome");
  await welcomed;
  const online = next(alice, "presence", (p) => p.state === "online");
  const bob = open(t, { url: again.url, clientId: "bob" });
  await bob.ready();
  assert.deepEqual((await online).devices, ["default"]);
});

test("a watch asked for while disconnected is sent once the session opens", { timeout: 30_000 }, async (t) => {
  const node = await startNode(t);
  const alice = connect({ WebSocket, url: node.url, clientId: "alice" });
  t.after(() => alice.close());
  // Not open yet: the watch waits for the session.
  const watching = alice.watch(["carol"]);
  const shown = next(alice, "presence");
  assert.deepEqual(await within(watching), { clients: ["carol"], denied: [] });
  assert.equal((await shown).state, "offline");
});
