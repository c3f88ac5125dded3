// switchboard-client against a real node: every frame, typed errors,
// carbons, groups, the inbox, the queue bound, token refresh, and resume
// across a node restart (embedded and clustered on Redis and NATS).
import assert from "node:assert/strict";
import { test } from "node:test";
import WebSocket from "ws";
import {
  Closed,
  InvalidRecipient,
  NotMember,
  QueueFull,
  RateLimited,
  TooLarge,
  Unavailable,
  connect,
} from "../dist/index.js";
import {
  api,
  eventually,
  freePort,
  inbox,
  next,
  open,
  startNats,
  startNode,
  startRedis,
  token,
  within,
} from "./support.mjs";

test("welcome, ack, message and delivered receipt on one node", { timeout: 30_000 }, async (t) => {
  const node = await startNode(t);
  const alice = open(t, { url: node.url, clientId: "alice", acks: false });
  const bob = open(t, { url: node.url, clientId: "bob", device: "phone" });
  const [aw, bw] = await Promise.all([alice.ready(), bob.ready()]);
  assert.equal(aw.client_id, "alice");
  assert.equal(aw.device, "default");
  assert.equal(aw.resume_token, undefined, "no acks mode, no resume token");
  assert.equal(bw.device, "phone");
  assert.ok(bw.resume_token, "acks mode (the default) offers resume");
  assert.equal(bob.state, "open");

  const got = next(bob, "message");
  const sent = await alice.send("bob", { text: "hi" }, { receipt: true });
  assert.equal(sent.status, "local");
  assert.equal(sent.sessions, 1);
  const m = await got;
  assert.deepEqual(m.body, { text: "hi" });
  assert.equal(m.from, "alice");
  assert.equal(m.to, "bob");
  assert.equal(m.msg_id, sent.msg_id);
  assert.equal(m.seq, 1, "acks mode numbers messages");
  // Delivered means confirmed: bob's client confirms lazily by itself.
  const outcome = await within(sent.outcome);
  assert.equal(outcome.status, "delivered");
  assert.equal(outcome.receipts[0].device, "phone");
  await alice.ping();
});

test("errors are typed and the session goes on", { timeout: 30_000 }, async (t) => {
  const key = "k";
  const node = await startNode(t, ["--max-frame-bytes", "256", "--rate-limit", "2", "--rate-burst", "3", "--api-key", key]);
  const alice = open(t, { url: node.url, clientId: "alice" });
  await alice.ready();
  await assert.rejects(alice.send("bob", "x".repeat(400)), TooLarge);
  await assert.rejects(alice.send("not valid!", 1), InvalidRecipient);
  assert.equal((await api(node, "PUT", "/api/v1/groups/team/members/bob", key)).status, 204);
  await assert.rejects(alice.sendGroup("team", "hi"), (e) => e instanceof NotMember && e.code === "not_member");
  // Over the rate: some of a burst are refused, each typed.
  const burst = await Promise.allSettled(Array.from({ length: 8 }, (_, i) => alice.send("bob", i)));
  const limited = burst.filter((r) => r.status === "rejected");
  assert.ok(limited.length > 0, "the burst goes over the rate");
  assert.ok(limited.every((r) => r.reason instanceof RateLimited), String(limited[0]?.reason));
});

test("carbons are flagged, groups fan out, and NATS away is Unavailable", { timeout: 30_000 }, async (t) => {
  const key = "k";
  const redis = await startRedis(t);
  const nats = await startNats(t);
  const cluster = ["--redis-url", redis, "--nats-url", nats.url, "--api-key", key];
  const a = await startNode(t, [...cluster, "--node-id", "a"]);
  const b = await startNode(t, [...cluster, "--node-id", "b"]);
  const phone = open(t, { url: a.url, clientId: "alice", device: "phone" });
  const laptop = open(t, { url: b.url, clientId: "alice", device: "laptop" });
  const bob = open(t, { url: b.url, clientId: "bob" });
  await Promise.all([phone.ready(), laptop.ready(), bob.ready()]);
  const carbon = next(laptop, "message");
  const sent = await phone.send("bob", "from my phone");
  assert.equal(sent.status, "remote");
  const copy = await carbon;
  assert.equal(copy.carbon, true);
  assert.equal(copy.to, "bob");
  for (const member of ["alice", "bob", "carol"]) {
    assert.equal((await api(a, "PUT", `/api/v1/groups/team/members/${member}`, key)).status, 204);
  }
  const toBob = next(bob, "message", (m) => m.group === "team");
  const fanout = await phone.sendGroup("team", "hi all");
  assert.equal(fanout.status, "fanout");
  assert.equal(fanout.offline, 1, "carol has no session");
  assert.equal(fanout.remote, 2, "bob and alice's laptop");
  assert.equal(fanout.nodes, 1);
  assert.equal((await toBob).body, "hi all");

  // NATS goes away: a send that needs it is refused, typed, and nothing
  // was sent.
  await nats.kill();
  await eventually("node-a refuses cross-node sends", async () => {
    try {
      await phone.send("bob", "while NATS is away");
      return false;
    } catch (error) {
      assert.ok(error instanceof Unavailable, String(error));
      assert.equal(error.code, "unavailable");
      return true;
    }
  });
});

test("offline sends say why, and the inbox keeps them for the next session", { timeout: 30_000 }, async (t) => {
  const node = await startNode(t, ["--inbox", "memory"]);
  const alice = open(t, { url: node.url, clientId: "alice" });
  assert.equal((await alice.ready()).inbox, 0);
  const plain = await alice.send("bob", "are you there?");
  assert.equal(plain.status, "offline");
  assert.equal(plain.reason, "never_seen");
  assert.deepEqual(await plain.outcome, { status: "offline", reason: "never_seen", receipts: [] });
  const kept = await alice.send("bob", "for later", { store: true });
  assert.equal(kept.stored, true);
  assert.equal((await kept.outcome).status, "stored");

  const bob = connect({ WebSocket, url: node.url, clientId: "bob" });
  t.after(() => bob.close());
  const messages = inbox(bob);
  assert.equal((await bob.ready()).inbox, 1);
  await eventually("the stored message arrives", () => messages.length === 1);
  assert.equal(messages[0].stored, true);
  assert.equal(messages[0].body, "for later");
});

test("sends while disconnected queue up to the bound, then reject; close rejects the rest", { timeout: 30_000 }, async (t) => {
  const port = await freePort(); // nobody listens there
  const client = connect({ WebSocket, url: `ws://127.0.0.1:${port}`, clientId: "alice", maxQueued: 2, reconnect: { initialDelayMs: 50, maxDelayMs: 200 } });
  const states = [];
  client.on("state", (s) => states.push(s));
  const first = client.send("bob", 1);
  const second = client.send("bob", 2);
  await assert.rejects(client.send("bob", 3), QueueFull);
  await eventually("it keeps retrying", () => states.includes("reconnecting"));
  client.close();
  await assert.rejects(first, Closed);
  await assert.rejects(second, Closed);
  await assert.rejects(client.send("bob", 4), Closed);
  assert.equal(client.state, "closed");
});

test("getToken is called again for every reconnect, and queued sends go out after it", { timeout: 30_000 }, async (t) => {
  const secret = "jwt-secret-for-the-js-tests";
  const first = await startNode(t, ["--jwt-secret", secret]);
  let calls = 0;
  const alice = open(t, {
    url: first.url,
    getToken: async () => {
      calls += 1;
      return token(secret, "alice", 60);
    },
    reconnect: { initialDelayMs: 50, maxDelayMs: 300 },
  });
  await alice.ready();
  assert.equal(calls, 1);
  await first.stop();
  await eventually("the client notices", () => alice.state === "reconnecting");
  const queued = alice.send("alice", "to myself, sent while away");
  const mine = next(alice, "message");
  await startNode(t, ["--jwt-secret", secret], { port: first.port });
  await within(alice.ready());
  assert.ok(calls >= 2, `getToken called ${calls} times`);
  const sent = await within(queued);
  assert.equal(sent.status, "local");
  assert.equal((await mine).body, "to myself, sent while away");
});

test("a restart of its node loses nothing: the client resumes on the cluster", { timeout: 30_000 }, async (t) => {
  const redis = await startRedis(t);
  const nats = await startNats(t);
  const cluster = ["--redis-url", redis, "--nats-url", nats.url, "--resume-secret", "js-tests"];
  const logged = [...cluster, "--log", "switchboard=debug"];
  const a = await startNode(t, [...logged, "--node-id", "a"]);
  const b = await startNode(t, [...logged, "--node-id", "b"]);
  const alice = open(t, { url: a.url, clientId: "alice", acks: false });
  const bob = open(t, { url: b.url, clientId: "bob", device: "tab-1", reconnect: { initialDelayMs: 50, maxDelayMs: 500 } });
  const messages = inbox(bob);
  const welcomes = [];
  bob.on("welcome", (w) => welcomes.push(w));
  await Promise.all([alice.ready(), bob.ready()]);
  const outcomes = [];
  const say = async (n) => {
    const sent = await alice.send("bob", n, { receipt: true });
    assert.notEqual(sent.status, "offline", `message ${n}: ${JSON.stringify(sent)}\nnode-a:\n${a.log()}\nnode-b:\n${b.log()}`);
    outcomes.push(sent.outcome);
  };
  await say(1);
  await eventually("bob has message 1", () => messages.length === 1);
  // node-b drains: bob's session is detached and passed on to node-a;
  // alice writes meanwhile; node-b comes back on the same address.
  await b.stop();
  for (let n = 2; n <= 4; n += 1) await say(n);
  const b2 = await startNode(t, [...logged, "--node-id", "b"], { port: b.port });
  try {
    await eventually("bob resumed and has every message", () => messages.length >= 4);
  } catch (e) {
    assert.fail(`${e.message}: ${JSON.stringify({ messages, welcomes, state: bob.state })}\nnode-a:\n${a.log()}\nnode-b:\n${b.log()}\nnode-b again:\n${b2.log()}`);
  }
  assert.ok(welcomes.some((w) => w.resumed === true), JSON.stringify(welcomes));
  assert.deepEqual(messages.map((m) => m.body), [1, 2, 3, 4], "once each, in order");
  const done = await within(Promise.all(outcomes));
  assert.deepEqual(done.map((o) => o.status), ["delivered", "delivered", "delivered", "delivered"]);
});
