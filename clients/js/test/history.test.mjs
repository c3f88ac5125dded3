// History, read state and sync (v3) in switchboard-client, against a real
// node: cseq on acks and messages, pages, conversations with unread
// counts, read receipts, typed errors.
import assert from "node:assert/strict";
import { test } from "node:test";
import { NoHistory, NotAllowed } from "../dist/index.js";
import { api, next, open, startNode } from "./support.mjs";

test("cseq on acks and copies; history pages; conversations; read receipts", { timeout: 30_000 }, async (t) => {
  const node = await startNode(t, ["--history", "memory"]);
  const alice = open(t, { url: node.url, clientId: "alice" });
  const bob = open(t, { url: node.url, clientId: "bob", device: "phone" });
  const bobTab = open(t, { url: node.url, clientId: "bob", device: "tab" });
  await Promise.all([alice.ready(), bob.ready(), bobTab.ready()]);
  const got = next(bob, "message");
  const sent = [];
  for (let n = 1; n <= 5; n++) sent.push(await alice.send("bob", { n }));
  assert.deepEqual(sent.map((s) => s.cseq), [1, 2, 3, 4, 5]);
  assert.equal((await got).cseq, 1, "the copy carries it too");
  const off = await alice.send("bob", "not kept", { history: false });
  assert.equal(off.cseq, undefined);

  const page = await bob.history({ with: "alice" }, { limit: 2 });
  assert.deepEqual(page.messages.map((m) => m.cseq), [4, 5]);
  assert.equal(page.more, true);
  const older = await bob.history({ with: "alice" }, { before: 4, limit: 10 });
  assert.deepEqual(older.messages.map((m) => m.body.n), [1, 2, 3]);
  const after = await bob.history({ with: "alice" }, { after: 3 });
  assert.deepEqual(after.messages.map((m) => m.cseq), [4, 5]);

  const list = await bob.conversations();
  assert.equal(list.items.length, 1);
  assert.equal(list.items[0].with, "alice");
  assert.equal(list.items[0].unread, 5);
  assert.equal(list.items[0].peer_read, 5, "her sends moved her cursor");

  const toAlice = next(alice, "read");
  const toTab = next(bobTab, "read");
  await bob.markRead({ with: "alice" }, 4);
  assert.deepEqual(await toAlice, { type: "read", by: "bob", with: "bob", upto: 4 });
  assert.deepEqual(await toTab, { type: "read", by: "bob", with: "alice", upto: 4 });
  assert.equal((await bobTab.conversations()).items[0].unread, 1);
});

test("a group is read by its members only; a node without history says so", { timeout: 30_000 }, async (t) => {
  const node = await startNode(t, ["--history", "memory", "--api-key", "k"]);
  await api(node, "PUT", "/api/v1/groups/team/members/alice", "k");
  const alice = open(t, { url: node.url, clientId: "alice" });
  const carol = open(t, { url: node.url, clientId: "carol" });
  await Promise.all([alice.ready(), carol.ready()]);
  const sent = await alice.sendGroup("team", "hi");
  assert.equal(sent.cseq, 1);
  await assert.rejects(carol.history({ group: "team" }), NotAllowed);
  await assert.rejects(carol.markRead({ group: "team" }, 1), NotAllowed);
  assert.equal((await alice.history({ group: "team" })).messages[0].body, "hi");

  const plain = await startNode(t);
  const dora = open(t, { url: plain.url, clientId: "dora" });
  await dora.ready();
  await assert.rejects(dora.conversations(), NoHistory);
});
