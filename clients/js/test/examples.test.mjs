// The examples run as their READMEs say, against a real node.
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { mkdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import path from "node:path";
import { test } from "node:test";
import { fileURLToPath } from "node:url";
import { eventually, inbox, open, startNode, within } from "./support.mjs";

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..");

test("the bot answers every message", { timeout: 30_000 }, async (t) => {
  const node = await startNode(t);
  const bot = spawn(process.execPath, [path.join(root, "examples/bot.mjs"), node.url, "echo-bot"], {
    stdio: ["ignore", "pipe", "inherit"],
  });
  t.after(() => bot.kill());
  let out = "";
  bot.stdout.on("data", (d) => (out += d));
  await eventually("the bot is ready", () => out.includes("ready on node"));

  const alice = open(t, { url: node.url, clientId: "alice" });
  const messages = inbox(alice);
  await alice.ready();
  const sent = await alice.send("echo-bot", { text: "hello bot" });
  assert.equal(sent.status, "local");
  await eventually("the bot answers", () => messages.length === 1);
  assert.deepEqual(messages[0].body, { text: "you said: hello bot" });
  assert.equal(messages[0].from, "echo-bot");
  await eventually("the bot logs it", () => out.includes("answered alice (local)"));
});

test("the README's example runs as pasted", { timeout: 30_000 }, async (t) => {
  const node = await startNode(t);
  const readme = readFileSync(path.join(root, "README.md"), "utf8");
  const code = readme.match(/```ts\n([\s\S]*?)```/)[1].replace("ws://127.0.0.1:8080", node.url);
  // Inside the package, so that "switchboard-client" resolves to itself
  // and "ws" to its dev dependency, as they would for a user.
  const dir = path.join(root, ".doccheck");
  mkdirSync(dir, { recursive: true });
  const file = path.join(dir, `readme-${process.pid}.mjs`);
  writeFileSync(file, code);
  t.after(() => rmSync(file, { force: true }));
  const bob = open(t, { url: node.url, clientId: "bob" });
  const got = inbox(bob);
  await bob.ready();
  // Not spawnSync: bob's client, in this process, must keep confirming.
  const child = spawn(process.execPath, [file], { stdio: ["ignore", "pipe", "pipe"] });
  t.after(() => child.kill());
  const run = { stdout: "", stderr: "" };
  child.stdout.on("data", (d) => (run.stdout += d));
  child.stderr.on("data", (d) => (run.stderr += d));
  const status = await within(new Promise((resolve) => child.once("exit", resolve)), "the example did not end");
  assert.equal(status, 0, run.stderr);
  assert.match(run.stdout, /connection: open/);
  assert.match(run.stdout, /ack: local/);
  assert.match(run.stdout, /outcome: delivered/);
  await eventually("bob has alice's hello", () => got.length === 1);
  assert.deepEqual(got[0].body, { text: "hello" });
});
