// The chat page: one WebSocket session to the node that served this page,
// speaking the wire protocol of docs/protocol.md. Every outcome the node
// reports (ack branch, receipt) is shown on the message it belongs to.
// The session is in acks mode: it confirms what it shows, and when the
// connection drops (or the node drains) it reconnects and resumes the
// session, so that nothing sent meanwhile is lost.
// No framework and no build step; user text only ever goes through
// textContent.
"use strict";

(function () {
  const body = document.body;
  const auth = body.dataset.auth; // "token" or "name"
  const $ = (id) => document.getElementById(id);
  const log = $("log");
  const statusPill = $("status");

  let ws = null;
  let wanted = false;      // the user wants to be connected
  let welcomed = false;    // the current socket got its welcome
  let attempt = 0;         // reconnect attempts since the last welcome
  let retryTimer = null;
  let nextId = 1;
  let target = null;       // the URL the user asked for; retries reuse it
  const byId = new Map();    // frame id -> log entry, until acked
  const byMsgId = new Map(); // msg_id -> {li, left}, until every session's receipt
  let resumeToken = null;  // takes this session back after a drop
  let lastSeq = 0;         // the last message seq shown
  let confirmed = 0;       // the last seq confirmed to the node
  let confirmTimer = null;

  // Each tab is a device of its own (protocol v2): made up once, kept for
  // the tab's life, so that a reload reconnects as the same device (and
  // replaces its old session) while other tabs stay online.
  const device = (function () {
    const key = "switchboard-device";
    let id = null;
    try { id = sessionStorage.getItem(key); } catch (e) { /* storage off */ }
    if (!id) {
      id = "tab-" + Math.random().toString(36).slice(2, 10);
      try { sessionStorage.setItem(key, id); } catch (e) { /* storage off */ }
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

  // A chat entry: "who" line, the text, and outcome badges.
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

  function badge(li, text, kind) {
    const b = document.createElement("span");
    b.className = "outcome " + kind;
    b.textContent = text;
    li.appendChild(b);
  }

  function bodyText(value) {
    if (value && typeof value === "object" && typeof value.text === "string") return value.text;
    return JSON.stringify(value);
  }

  function socketUrl() {
    const scheme = location.protocol === "https:" ? "wss:" : "ws:";
    const query = auth === "token"
      ? "token=" + encodeURIComponent($("token").value.trim())
      : "client_id=" + encodeURIComponent($("name").value.trim());
    return scheme + "//" + location.host + "/ws?" + query + "&device=" + encodeURIComponent(device) + "&acks=1";
  }

  // Confirms what was shown, lazily: after 200 ms, or every 32 messages.
  function confirm() {
    clearTimeout(confirmTimer);
    confirmTimer = null;
    if (ws && ws.readyState === WebSocket.OPEN && lastSeq > confirmed) {
      ws.send(JSON.stringify({ type: "received", upto: lastSeq }));
      confirmed = lastSeq;
    }
  }

  function seen(seq) {
    lastSeq = seq;
    if (lastSeq - confirmed >= 32) confirm();
    else if (!confirmTimer) confirmTimer = setTimeout(confirm, 200);
  }

  function connect() {
    clearTimeout(retryTimer);
    if (ws) {
      // A socket from an earlier attempt must not schedule retries.
      ws.onclose = null;
      ws.onmessage = null;
      ws.close(1000);
    }
    welcomed = false;
    setStatus("connecting", "idle");
    const resume = resumeToken
      ? "&resume=" + encodeURIComponent(resumeToken) + "&upto=" + lastSeq
      : "";
    ws = new WebSocket(target + resume);
    ws.onmessage = (event) => handle(JSON.parse(event.data));
    ws.onclose = (event) => closed(event);
  }

  function handle(frame) {
    switch (frame.type) {
      case "welcome": {
        welcomed = true;
        attempt = 0;
        if (frame.resumed === true) {
          line("system", "session resumed: nothing sent to you meanwhile was lost");
        } else {
          if (frame.resumed === false) {
            line("system", "a new session: the old one could not be resumed");
            for (const sent of byMsgId.values()) badge(sent.li, "no receipt: disconnected", "idle");
            byMsgId.clear();
          }
          lastSeq = 0;
        }
        confirmed = lastSeq;
        resumeToken = frame.resume_token || null;
        setStatus("connected", "open");
        $("login").hidden = true;
        $("chat").hidden = false;
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
        $("to").focus();
        break;
      }
      case "ack": {
        const li = byId.get(frame.id);
        if (!li) break;
        byId.delete(frame.id);
        li.querySelector(".pending")?.remove();
        if (frame.status === "fanout") {
          // A group send: how many sessions each branch took. Only
          // sessions that could not be reached answer later (offline).
          badge(li, "fanout: " + frame.local + " here, " + frame.remote + " elsewhere, " +
            frame.offline + " offline", "remote");
          byMsgId.set(frame.msg_id, { li, left: Infinity });
          break;
        }
        const sessions = frame.sessions ?? 1;
        badge(li, sessions > 1 ? frame.status + " ×" + sessions : frame.status, frame.status);
        // An offline message goes no further: no receipt will come. Each
        // session it reached answers with a receipt of its own.
        if (frame.status !== "offline") byMsgId.set(frame.msg_id, { li, left: sessions });
        break;
      }
      case "receipt": {
        const sent = byMsgId.get(frame.msg_id);
        if (!sent) break;
        sent.left -= 1;
        if (sent.left <= 0) byMsgId.delete(frame.msg_id);
        const device = frame.device && frame.device !== "default" ? frame.device : "";
        // A group's receipts name the member; a client's, only its device.
        const member = sent.left === Infinity && frame.to ? frame.to + (device ? "/" + device : "") : device;
        const where = member ? " (" + member + ")" : "";
        const why = frame.reason ? ": " + frame.reason : "";
        badge(sent.li, frame.status + where + why, frame.status);
        break;
      }
      case "message":
        if (typeof frame.seq === "number") {
          if (frame.seq <= lastSeq) break; // written again after a resume
          seen(frame.seq);
        }
        if (frame.carbon) {
          // Sent by this person from another device.
          entry("out carbon", "you (another device) → " + frame.to, bodyText(frame.body));
        } else if (frame.group) {
          entry("in group", "#" + frame.group + " " + frame.from, bodyText(frame.body));
        } else {
          entry("in", frame.from, bodyText(frame.body));
        }
        break;
      case "error": {
        const li = frame.id && byId.get(frame.id);
        if (li) {
          byId.delete(frame.id);
          li.querySelector(".pending")?.remove();
          badge(li, "error: " + frame.code, "offline");
        }
        line("error", "error " + frame.code + ": " + frame.message);
        break;
      }
    }
  }

  function closed(event) {
    ws = null;
    // What was on its way and never answered: say so, do not pretend.
    for (const li of byId.values()) {
      li.querySelector(".pending")?.remove();
      badge(li, "unknown: disconnected", "offline");
    }
    byId.clear();
    // Receipts still owed arrive after a resume; only a session that
    // cannot be resumed drops them (see the welcome).
    clearTimeout(confirmTimer);
    confirmTimer = null;
    const why = event.reason ? " (" + event.code + " " + event.reason + ")" : " (" + event.code + ")";
    if (!wanted) {
      setStatus("not connected", "idle");
      line("system", "disconnected" + why);
      return;
    }
    if (event.code === 4001) {
      wanted = false;
      setStatus("replaced", "closed");
      line("error", "this device connected again elsewhere (another tab with the same device?); not reconnecting");
      showLogin();
      return;
    }
    if (!welcomed && attempt === 0) {
      line("error", "could not connect" + why + ": check the " + (auth === "token" ? "token" : "name"));
    } else if (welcomed) {
      line("error", "connection lost" + why);
    }
    // Exponential backoff with jitter: 1 s, 2 s, 4 s ... up to 30 s.
    const delay = Math.min(30000, 1000 * 2 ** attempt) * (0.75 + Math.random() / 2);
    attempt += 1;
    setStatus("reconnecting in " + Math.round(delay / 1000) + " s", "retry");
    retryTimer = setTimeout(connect, delay);
  }

  function showLogin() {
    $("chat").hidden = true;
    $("who").hidden = true;
    $("login").hidden = false;
  }

  $("connect-form").addEventListener("submit", (event) => {
    event.preventDefault();
    wanted = true;
    attempt = 0;
    resumeToken = null;
    lastSeq = 0;
    // Retries use what was submitted, not what is being typed meanwhile.
    target = socketUrl();
    connect();
  });

  $("disconnect").addEventListener("click", () => {
    wanted = false;
    clearTimeout(retryTimer);
    confirm();
    resumeToken = null;
    if (ws) ws.close(1000);
    showLogin();
  });

  $("send-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const to = $("to").value.trim();
    const text = $("text").value;
    if (!to || !text) return;
    const li = entry("out", "you → " + to, text);
    if (!ws || ws.readyState !== WebSocket.OPEN || !welcomed) {
      badge(li, "not sent: not connected", "offline");
      return;
    }
    const id = "m" + nextId++;
    const pending = document.createElement("span");
    pending.className = "outcome pending";
    pending.textContent = "sending";
    li.appendChild(pending);
    byId.set(id, li);
    // "#team" is the group team: no delivered receipts for groups.
    const frame = to.startsWith("#")
      ? { type: "send", group: to.slice(1), body: { text }, id }
      : { type: "send", to, body: { text }, id, receipt: true };
    ws.send(JSON.stringify(frame));
    $("text").value = "";
    $("text").focus();
  });
})();
