// A bot that answers every message it gets.
//
//   node examples/bot.mjs [ws://127.0.0.1:8080] [bot name]
//
// It connects in acks mode (the default), so if its node restarts it
// resumes and answers what came meanwhile; Ctrl-C closes it.
import WebSocket from "ws";
import { connect } from "../dist/index.js";

const url = process.argv[2] ?? "ws://127.0.0.1:8080";
const name = process.argv[3] ?? "bot";
const bot = connect({ url, clientId: name, device: "bot", WebSocket });

bot.on("state", (state) => console.log(`[${name}] ${state}`));
bot.on("message", async (m) => {
  // Only messages to the bot itself; not its own carbons or group chatter.
  if (m.carbon || m.group || m.from === name) return;
  const text = typeof m.body?.text === "string" ? m.body.text : JSON.stringify(m.body);
  try {
    const sent = await bot.send(m.from, { text: `you said: ${text}` });
    console.log(`[${name}] answered ${m.from} (${sent.status})`);
  } catch (error) {
    console.error(`[${name}] could not answer ${m.from}: ${error.code}: ${error.message}`);
  }
});

const welcome = await bot.ready();
console.log(`[${name}] ready on node ${welcome.node}: send me a message`);
process.on("SIGINT", () => {
  bot.close();
  process.exit(0);
});
