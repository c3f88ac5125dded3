// The chat page's conversations (v3 history), on a node with --history:
// the list with unread counts, the open conversation in the log (its last
// 50 messages, older ones on demand), and ✓✓ read marks on what this
// person sent, from the other client's read cursor. A conversation is
// named "bob" (two clients) or "#team" (a group), as the page's "to" field
// names recipients. User text only ever goes through textContent.

const PAGE = 50;

const threadOf = (key) => (key.startsWith("#") ? { group: key.slice(1) } : { with: key });
const keyOfItem = (item) => (item.group ? "#" + item.group : item.with);

export class Conversations {
  // view: { clear(), entry(kind, who, text, atTop) -> li, mark(li, text, kind), line(kind, text) }
  constructor(client, me, view) {
    this.client = client;
    this.me = me;
    this.view = view;
    this.items = new Map(); // key -> { cseq, read, unread, peerRead, last }
    this.current = null;
    this.oldest = null; // cseq of the oldest message shown
    this.outgoing = new Map(); // cseq -> li, this person's messages in the open conversation
    this.readTimer = null;
    // While a conversation loads: its live messages, shown after the page
    // (those the page holds already are skipped).
    this.loading = null;
    this.shownUpTo = 0;
  }

  /** Loads the list; false on a node without history. */
  async start() {
    try {
      await this.refresh();
      return true;
    } catch (error) {
      if (error.code === "no_history") return false;
      throw error;
    }
  }

  async refresh() {
    const list = await this.client.conversations({ limit: 50 });
    this.items.clear();
    for (const item of list.items) {
      this.items.set(keyOfItem(item), {
        cseq: item.cseq,
        read: item.read,
        unread: item.unread,
        peerRead: item.peer_read ?? 0,
        last: item.last,
      });
    }
    this.render();
    if (this.current) await this.open(this.current);
    else if (list.items.length) await this.open(keyOfItem(list.items[0]));
  }

  /** The conversation a live message belongs to. */
  keyOf(m) {
    if (m.group) return "#" + m.group;
    return m.carbon || m.from === this.me ? m.to : m.from;
  }

  /** Opens `key`: its last messages in the log, marked read. */
  async open(key) {
    this.current = key;
    this.outgoing.clear();
    const waiting = [];
    this.loading = waiting;
    let page;
    try {
      page = await this.client.history(threadOf(key), { limit: PAGE });
    } finally {
      if (this.loading === waiting) this.loading = null;
    }
    if (this.current !== key) return; // another was opened meanwhile
    this.view.clear(key);
    this.oldest = page.messages.length ? page.messages[0].cseq : null;
    this.view.older(page.more);
    for (const m of page.messages) this.show(m, false);
    const last = page.messages.length ? page.messages[page.messages.length - 1].cseq : 0;
    this.shownUpTo = last;
    for (const m of waiting) {
      if (m.cseq === undefined || m.cseq > last) this.show(m, false);
    }
    this.readUpTo(Math.max(last, ...waiting.map((m) => m.cseq ?? 0)));
    this.render();
  }

  /** The next older page, above what is shown. */
  async older() {
    if (!this.current || this.oldest === null) return;
    const page = await this.client.history(threadOf(this.current), { before: this.oldest, limit: PAGE });
    for (const m of [...page.messages].reverse()) this.show(m, true);
    if (page.messages.length) this.oldest = page.messages[0].cseq;
    this.view.older(page.more);
  }

  /** A kept or live message in the open conversation's log. */
  show(m, atTop) {
    const mine = m.from === this.me;
    const who = mine ? "you → " + (m.group ? "#" + m.group : m.to) : (m.group ? "#" + m.group + " " : "") + m.from;
    const li = this.view.entry(mine ? "out" : m.group ? "in group" : "in", who, m.body, atTop);
    if (m.cseq !== undefined) {
      li.dataset.cseq = String(m.cseq);
      this.view.mark(li, "#" + m.cseq, "cseq");
      if (mine) this.sent(li, m.cseq);
    }
    return li;
  }

  /** One of this person's messages, numbered: ✓✓ read once the other has. */
  sent(li, cseq) {
    this.outgoing.set(cseq, li);
    const item = this.items.get(this.current);
    if (item && !this.current.startsWith("#") && item.peerRead >= cseq) this.view.mark(li, "✓✓ read", "read");
  }

  /** A live message (or a carbon): answers whether the page should keep
   * it out of the log (its conversation is not the open one: it is
   * counted as unread instead). */
  hidden(m) {
    const key = this.keyOf(m);
    const item = this.items.get(key) ?? { cseq: 0, read: 0, unread: 0, peerRead: 0, last: m };
    item.last = m;
    if (m.cseq !== undefined) item.cseq = Math.max(item.cseq, m.cseq);
    this.items.set(key, item);
    if (this.current === null) {
      // Nothing open yet: the first conversation that speaks opens (its
      // history holds this message: it was kept before it was routed).
      this.open(key).catch((e) => this.view.line("error", "history: " + e.code));
      return true;
    }
    if (key === this.current) {
      if (this.loading) {
        this.loading.push(m);
        return true;
      }
      if (m.cseq !== undefined && m.cseq <= this.shownUpTo) return true;
      if (m.cseq !== undefined && !m.carbon) this.readUpTo(m.cseq);
      this.render();
      return false; // the page shows it as before
    }
    if (!m.carbon && m.from !== this.me) item.unread += 1;
    this.render();
    return true; // counted, not shown
  }

  /** What this person sent from this tab got its number. */
  acked(to, li, cseq) {
    const item = this.items.get(to) ?? { cseq: 0, read: 0, unread: 0, peerRead: 0, last: null };
    item.cseq = Math.max(item.cseq, cseq);
    item.read = Math.max(item.read, cseq);
    this.items.set(to, item);
    if (to === this.current) {
      li.dataset.cseq = String(cseq);
      this.view.mark(li, "#" + cseq, "cseq");
      this.sent(li, cseq);
    }
    this.render();
  }

  /** A read receipt: this person's cursor on another device, or the
   * other client's. */
  read(r) {
    const key = r.group ? "#" + r.group : r.with;
    const item = this.items.get(key);
    if (!item) return;
    if (r.by === this.me) {
      item.read = Math.max(item.read, r.upto);
      item.unread = Math.max(0, Math.min(item.unread, item.cseq - item.read));
    } else {
      item.peerRead = Math.max(item.peerRead, r.upto);
      if (key === this.current) {
        for (const [cseq, li] of this.outgoing) {
          if (cseq <= r.upto && !li.querySelector(".outcome.read")) this.view.mark(li, "✓✓ read", "read");
        }
      }
    }
    this.render();
  }

  /** Marks the open conversation read up to `cseq` (a moment later, so
   * that a burst marks once). */
  readUpTo(cseq) {
    const key = this.current;
    const item = this.items.get(key);
    if (!item || cseq <= item.read) return;
    item.read = cseq;
    item.unread = 0;
    clearTimeout(this.readTimer);
    this.readTimer = setTimeout(() => {
      this.client.markRead(threadOf(key), cseq).catch(() => {});
    }, 100);
  }

  render() {
    const list = document.getElementById("conversation-list");
    list.textContent = "";
    const byRecent = [...this.items.entries()].sort((a, b) => (b[1].last?.ts ?? 0) - (a[1].last?.ts ?? 0));
    for (const [key, item] of byRecent) {
      const li = document.createElement("li");
      li.dataset.key = key;
      if (key === this.current) li.className = "open";
      const name = document.createElement("button");
      name.type = "button";
      name.className = "link name";
      name.textContent = key;
      name.addEventListener("click", () => {
        document.getElementById("to").value = key;
        this.open(key).catch((e) => this.view.line("error", "history: " + e.code));
      });
      const unread = document.createElement("span");
      unread.className = "unread";
      unread.textContent = item.unread > 0 ? item.unread + " unread" : "";
      li.append(name, unread);
      list.appendChild(li);
    }
  }
}
