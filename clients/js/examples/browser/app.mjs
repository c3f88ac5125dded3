// A minimal browser app on the package's bundle: connect, show what
// arrives, send with a receipt and show ✓ / ✓✓ / offline.
import { connect } from "./switchboard-client.min.js";

const params = new URLSearchParams(location.search);
const node = params.get("node") ?? "ws://127.0.0.1:8080";
const me = params.get("me") ?? `web-${Math.random().toString(36).slice(2, 7)}`;
const $ = (id) => document.getElementById(id);
$("me").textContent = me;

function line(text) {
  const li = document.createElement("li");
  li.textContent = text;
  $("log").appendChild(li);
  return li;
}

const client = connect({ url: node, clientId: me, device: "example" });
client.on("state", (state) => ($("status").textContent = state));
client.on("message", (m) => line(`${m.from}: ${m.body?.text ?? JSON.stringify(m.body)}`));

$("send").addEventListener("submit", async (event) => {
  event.preventDefault();
  const to = $("to").value;
  const text = $("text").value;
  const li = line(`you → ${to}: ${text}`);
  try {
    const sent = await client.send(to, { text }, { receipt: true });
    li.textContent += sent.status === "offline" ? ` (offline: ${sent.reason})` : " ✓";
    const outcome = await sent.outcome;
    if (outcome?.status === "delivered") li.textContent += "✓";
  } catch (error) {
    li.textContent += ` (error: ${error.code})`;
  }
});
