// Backend hooks (v3) in switchboard-client: a send the application's
// backend refuses rejects with a typed Rejected error carrying the reason;
// a rewritten one arrives rewritten.
import assert from "node:assert/strict";
import { test } from "node:test";
import { Rejected } from "../dist/index.js";
import { next, open, startHookBackend, startNode } from "./support.mjs";

test("a moderated send is Rejected with its reason; a masked one arrives rewritten", { timeout: 30_000 }, async (t) => {
  const hook = await startHookBackend(t, "js-secret", ["--refuse", "spam", "--mask", "darn"]);
  const node = await startNode(t, ["--hook-url", hook, "--hook-secret", "js-secret", "--hooks", "send"]);
  const alice = open(t, { url: node.url, clientId: "alice" });
  const bob = open(t, { url: node.url, clientId: "bob" });
  await Promise.all([alice.ready(), bob.ready()]);
  await assert.rejects(alice.send("bob", { text: "cheap spam" }), (error) => {
    assert.ok(error instanceof Rejected);
    assert.equal(error.code, "rejected");
    assert.equal(error.reason, "moderated");
    assert.equal(error.message, "no spam here");
    return true;
  });
  const got = next(bob, "message");
  await alice.send("bob", { text: "darn" });
  assert.deepEqual((await got).body, { text: "****" });
});
