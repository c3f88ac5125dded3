// The chat page, built on the switchboard-client package (clients/js),
// whose browser bundle this node serves at /page/switchboard-client.min.js.
// One client to the node that served this page, in acks mode: it confirms
// what it shows and, when the connection drops (or the node drains),
// reconnects and resumes the session, so nothing sent meanwhile is lost.
// Every outcome the node reports is shown on the message it belongs to:
// ✓ sent (local or remote), ✓✓ delivered, stored, offline with a reason.
// Everyone this person talks to is watched (v3 presence): an online dot,
// their device count, when they were last seen, and "typing…" while they
// type (signals, sent at most every 3 s while typing, shown for 5 s).
// On a node with history (v3), conversations.js keeps the list of
// conversations with unread counts and shows one at a time in the log.
// No framework; user text only ever goes through textContent.
import { connect } from "/page/switchboard-client.min.js";
import { Conversations } from "/page/conversations.js";

const body = document.body;
const auth = body.dataset.auth; // "token" or "name"
const $ = (id) => document.getElementById(id);
const log = $("log");
const statusPill = $("status");

let client = null;
let welcomedOnce = false;
const byMsgId = new Map(); // msg_id -> log entry, while receipts may come
const people = new Map(); // client id -> its row in the people list
let conversations = null; // with history: the conversations (conversations.js)
const typingSentAt = new Map(); // recipient -> when "typing" last went to it
// A typing signal goes at most this often while one types, and is shown
// this long after the last one.
const TYPING_EVERY_MS = 3000;
const TYPING_SHOWN_MS = 5000;

// Each tab is a device of its own: made up once, kept for the tab's life,
// so that a reload reconnects as the same device (replacing its old
// session) while other tabs stay online.
const device = (() => {
  const key = "switchboard-device";
  let id = null;
  try { id = sessionStorage.getItem(key); } catch { /* storage off */ }
  if (!id) {
    id = "tab-" + Math.random().toString(36).slice(2, 10);
    try { sessionStorage.setItem(key, id); } catch { /* storage off */ }
  }
  return id;
})();

$("page-node").textContent = body.dataset.node;
$(auth === "token" ? "name-field" : "token-field").hidden = true;

function setStatus(text, kind) {
  statusPill.textContent = text;
  statusPill.className = "pill " + kind;
}

function line(kind, text) {
  const li = document.createElement("li");
  li.className = kind;
  li.textContent = text;
  log.appendChild(li);
  log.scrollTop = log.scrollHeight;
  return li;
}

// A chat entry: who, the text, then outcome marks.
function entry(kind, who, text) {
  const li = document.createElement("li");
  li.className = kind;
  const head = document.createElement("span");
  head.className = "who-line";
  head.textContent = who + ": ";
  const words = document.createElement("span");
  words.className = "text";
  words.textContent = text;
  li.append(head, words);
  log.appendChild(li);
  log.scrollTop = log.scrollHeight;
  return li;
}

function mark(li, text, kind) {
  const b = document.createElement("span");
  b.className = "outcome " + kind;
  b.textContent = text;
  li.appendChild(b);
}

function bodyText(value) {
  if (value && typeof value === "object" && typeof value.text === "string") return value.text;
  return JSON.stringify(value);
}

function showLogin() {
  $("chat").hidden = true;
  $("who").hidden = true;
  $("login").hidden = false;
}

function start() {
  const scheme = location.protocol === "https:" ? "wss:" : "ws:";
  // Retries use what was submitted, not what is being typed meanwhile.
  const credentials = auth === "token"
    ? { token: $("token").value.trim() }
    : { clientId: $("name").value.trim() };
  welcomedOnce = false;
  client = connect({
    url: scheme + "//" + location.host,
    device,
    acks: true,
    reconnect: { initialDelayMs: 1000, maxDelayMs: 30000 },
    ...credentials,
  });
  const mine = client;
  setStatus("connecting", "idle");
  mine.on("welcome", (w) => welcomed(w));
  mine.on("message", (m) => shown(m));
  mine.on("presence", (p) => presence(p));
  mine.on("signal", (s) => signal(s));
  mine.on("read", (r) => conversations?.read(r));
  mine.on("receipt", (r) => receipt(r));
  mine.on("error", (e) => line("error", "error " + e.code + ": " + e.message));
  mine.on("disconnect", ({ code, reason }) => {
    if (client !== mine) return;
    const why = " (" + code + (reason ? " " + reason : "") + ")";
    if (code === 4001) {
      setStatus("replaced", "closed");
      line("error", "this device connected again elsewhere (another tab with the same device?); not reconnecting");
      showLogin();
    } else if (!welcomedOnce) {
      line("error", "could not connect" + why + ": check the " + (auth === "token" ? "token" : "name"));
    } else {
      line("error", "connection lost" + why);
    }
  });
  mine.on("retry", ({ delayMs }) => {
    if (client === mine) setStatus("reconnecting in " + Math.max(1, Math.round(delayMs / 1000)) + " s", "retry");
  });
}

function welcomed(frame) {
  if (frame.resumed === true) {
    line("system", "session resumed: nothing sent to you meanwhile was lost");
  } else if (welcomedOnce) {
    line("system", "a new session: the old one could not be resumed");
  }
  welcomedOnce = true;
  setStatus("connected", "open");
  $("login").hidden = true;
  $("chat").hidden = false;
  // The inbox option, only where the node keeps messages for the offline.
  $("store-field").hidden = frame.inbox === undefined;
  $("people").hidden = false;
  const who = $("who");
  who.hidden = false;
  who.textContent = "";
  const name = document.createElement("strong");
  name.id = "me";
  name.textContent = frame.client_id;
  const node = document.createElement("strong");
  node.id = "my-node";
  node.textContent = frame.node;
  const dev = document.createElement("strong");
  dev.id = "my-device";
  dev.textContent = frame.device;
  who.append("You are ", name, " on device ", dev, ", node ", node, ".");
  line("system", "connected as " + frame.client_id + " (" + frame.device + ") to " + frame.node);
  if (frame.inbox) line("system", frame.inbox + " message(s) kept for you while you were away");
  startConversations(frame.client_id);
  $("to").focus();
}

// The log as conversations.js draws a conversation in it.
const view = {
  clear(key) {
    log.textContent = "";
    line("system", "conversation with " + key);
  },
  entry(kind, who, body, atTop) {
    const li = entry(kind, who, bodyText(body));
    if (atTop) log.insertBefore(li, log.children[1] ?? null);
    return li;
  },
  mark: (li, text, kind) => mark(li, text, kind),
  line: (kind, text) => line(kind, text),
  older(more) {
    $("older").hidden = !more;
  },
};

// With history (a node with --history), the conversations list; a new
// session (after a reconnect) reloads it, so that it shows what came
// meanwhile.
function startConversations(me) {
  const mine = client;
  const list = new Conversations(mine, me, view);
  list.start().then((on) => {
    if (client !== mine) return;
    conversations = on ? list : null;
    $("conversations").hidden = !on;
  }, (error) => line("error", "conversations: " + error.code));
}

// ---- People: presence and typing (v3) ------------------------------------

// The row of `id` in the people list, made (and watched) the first time
// this person talks to them.
function person(id) {
  let row = people.get(id);
  if (row) return row;
  const me = client && client.welcome ? client.welcome.client_id : null;
  if (!client || !id || id === me || id.startsWith("#")) return null;
  const li = document.createElement("li");
  li.dataset.client = id;
  const dot = document.createElement("span");
  dot.className = "dot";
  const name = document.createElement("span");
  name.className = "name";
  name.textContent = id;
  const detail = document.createElement("span");
  detail.className = "detail";
  detail.textContent = "…";
  const typing = document.createElement("span");
  typing.className = "typing";
  typing.hidden = true;
  typing.textContent = "typing…";
  li.append(dot, name, detail, typing);
  $("people-list").appendChild(li);
  row = { li, dot, detail, typing, timer: null };
  people.set(id, row);
  client.watch([id]).then(({ denied }) => {
    if (denied.includes(id)) row.detail.textContent = "presence not shared with you";
  }, (error) => {
    row.detail.textContent = "presence unknown (" + error.code + ")";
  });
  return row;
}

function presence(p) {
  const row = person(p.client_id);
  if (!row) return;
  const online = p.state === "online";
  row.dot.className = "dot " + (online ? "online" : "offline");
  row.li.dataset.state = p.state;
  if (online) {
    const n = p.devices.length;
    row.detail.textContent = "online, " + n + (n === 1 ? " device" : " devices");
  } else {
    row.detail.textContent = p.last_seen
      ? "offline, last seen " + new Date(p.last_seen).toLocaleTimeString()
      : "offline";
    typingStopped(row);
  }
}

function signal(s) {
  if (!s.body || s.body.typing !== true) return;
  const row = person(s.from);
  if (!row) return;
  row.typing.hidden = false;
  row.typing.textContent = s.group ? "typing in #" + s.group + "…" : "typing…";
  if (row.timer) clearTimeout(row.timer);
  row.timer = setTimeout(() => typingStopped(row), TYPING_SHOWN_MS);
}

function typingStopped(row) {
  if (row.timer) clearTimeout(row.timer);
  row.timer = null;
  row.typing.hidden = true;
}

// While this person types: a typing signal to whom they write, at most
// every 3 s.
function typed() {
  const to = $("to").value.trim();
  if (!client || client.state !== "open" || !to || !$("text").value) return;
  const now = Date.now();
  if (now - (typingSentAt.get(to) ?? 0) < TYPING_EVERY_MS) return;
  typingSentAt.set(to, now);
  if (to.startsWith("#")) client.signalGroup(to.slice(1), { typing: true });
  else client.signal(to, { typing: true });
}

function shown(m) {
  const from = people.get(m.from);
  if (from && !m.carbon) typingStopped(from);
  if (!m.carbon) person(m.from);
  // With history, only the open conversation is in the log.
  if (conversations?.hidden(m)) return;
  let li;
  if (m.carbon) {
    // Sent by this person from another device.
    li = entry("out carbon", "you (another device) → " + (m.group ? "#" + m.group : m.to), bodyText(m.body));
  } else if (m.group) {
    li = entry("in group", "#" + m.group + " " + m.from, bodyText(m.body));
  } else {
    li = entry(m.stored ? "in stored" : "in", m.from, bodyText(m.body));
    if (m.stored) mark(li, "kept while you were away", "stored");
  }
  if (m.cseq !== undefined) {
    li.dataset.cseq = String(m.cseq);
    mark(li, "#" + m.cseq, "cseq");
  }
}

function receipt(r) {
  const li = byMsgId.get(r.msg_id);
  if (!li) return;
  const device = r.device && r.device !== "default" ? r.device : "";
  // A group's receipts name the member; a client's, only its device.
  const member = li.dataset.group && r.to ? r.to + (device ? "/" + device : "") : device;
  const where = member ? " (" + member + ")" : "";
  if (r.status === "delivered") mark(li, "✓✓ delivered" + where, "delivered");
  else mark(li, "offline" + where + (r.reason ? ": " + r.reason : ""), "offline");
}

async function send(to, text, store) {
  // With history, sending opens the conversation.
  if (conversations && conversations.current !== to) {
    try {
      await conversations.open(to);
    } catch (error) {
      line("error", "history: " + error.code);
    }
  }
  const li = entry("out", "you → " + to, text);
  person(to);
  typingSentAt.delete(to);
  if (!client || client.state === "closed") {
    mark(li, "not sent: not connected", "offline");
    return;
  }
  const pending = document.createElement("span");
  pending.className = "outcome pending";
  pending.textContent = client.state === "open" ? "sending" : "queued until reconnected";
  li.appendChild(pending);
  try {
    // "#team" is the group team (no delivered receipts for groups).
    const sent = to.startsWith("#")
      ? await client.sendGroup(to.slice(1), { text })
      : await client.send(to, { text }, { receipt: true, store });
    pending.remove();
    byMsgId.set(sent.msg_id, li);
    if (sent.cseq !== undefined) conversations?.acked(to, li, sent.cseq);
    if (sent.status === "fanout") {
      li.dataset.group = "1";
      mark(li, "✓ fanout: " + sent.local + " here, " + sent.remote + " elsewhere, " + sent.offline + " offline", "remote");
    } else if (sent.status === "offline") {
      mark(li, "offline: " + (sent.reason || "not connected") +
        (sent.last_seen ? " (last seen " + new Date(sent.last_seen).toLocaleTimeString() + ")" : ""), "offline");
      if (sent.stored) mark(li, "stored for later", "stored");
      else if (sent.store_error) mark(li, "not stored: " + sent.store_error, "offline");
    } else {
      const n = sent.sessions ?? 1;
      mark(li, "✓ " + sent.status + (n > 1 ? " ×" + n : ""), sent.status);
    }
  } catch (error) {
    pending.remove();
    // Refused (v3: by the application's backend, with its reason), or the
    // connection dropped before the ack: say so.
    const why = error.code === "connection_lost" ? "unknown: disconnected"
      : error.code === "rejected" ? "rejected: " + (error.reason ?? "by the application")
      : "error: " + error.code;
    mark(li, why, "offline");
  }
}

$("connect-form").addEventListener("submit", (event) => {
  event.preventDefault();
  if (client) client.close();
  forgetPeople();
  start();
});

$("disconnect").addEventListener("click", async () => {
  const old = client;
  client = null;
  setStatus("not connected", "idle");
  showLogin();
  forgetPeople();
  // What the socket really reported when it closed.
  const closed = old ? await old.close() : null;
  line("system", closed
    ? "disconnected (" + closed.code + (closed.reason ? " " + closed.reason : "") + ")"
    : "disconnected (was not connected)");
});

function forgetPeople() {
  conversations = null;
  $("conversations").hidden = true;
  $("conversation-list").textContent = "";
  for (const row of people.values()) typingStopped(row);
  people.clear();
  typingSentAt.clear();
  $("people-list").textContent = "";
  $("invisible").checked = false;
  $("people").hidden = true;
}

$("text").addEventListener("input", typed);

$("older").addEventListener("click", () => {
  conversations?.older().catch((e) => line("error", "history: " + e.code));
});
// Scrolled to the top of a conversation: the page before.
log.addEventListener("scroll", () => {
  if (log.scrollTop === 0 && !$("older").hidden) $("older").click();
});

$("invisible").addEventListener("change", async (event) => {
  const box = event.target;
  if (!client) return;
  try {
    await client.setVisible(!box.checked);
    line("system", box.checked ? "you are invisible: you look offline to others" : "you are visible again");
  } catch (error) {
    box.checked = !box.checked;
    line("error", "visibility not changed: " + error.code);
  }
});

$("send-form").addEventListener("submit", (event) => {
  event.preventDefault();
  const to = $("to").value.trim();
  const text = $("text").value;
  if (!to || !text) return;
  void send(to, text, $("store").checked);
  $("text").value = "";
  $("text").focus();
});
