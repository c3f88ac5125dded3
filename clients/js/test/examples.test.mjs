// The examples run as their READMEs say, against a real node.
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import path from "node:path";
import { test } from "node:test";
import { fileURLToPath } from "node:url";
import { eventually, inbox, open, startNode } from "./support.mjs";

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
