import {
  Closed,
  ConnectionLost,
  QueueFull,
  SwitchboardError,
  fromFrame,
} from "./errors.js";
import type {
  AckFrame,
  ClientFrame,
  ConversationsFrame,
  HistoryFrame,
  MessageFrame,
  OfflineReason,
  OkFrame,
  PresenceFrame,
  ReadFrame,
  ReceiptFrame,
  ServerFrame,
  SignalFrame,
  Thread,
  WatchingFrame,
  WelcomeFrame,
} from "./protocol.js";
import { CloseCode } from "./protocol.js";

/** What this client needs of a WebSocket: the browser's, Node 22's
 * global one, or `ws`'s. */
export interface WebSocketLike {
  readonly readyState: number;
  send(data: string): void;
  close(code?: number, reason?: string): void;
  onopen: ((event: unknown) => void) | null;
  onmessage: ((event: { data: unknown }) => void) | null;
  onclose: ((event: { code: number; reason: string }) => void) | null;
  onerror: ((event: unknown) => void) | null;
}

export type WebSocketConstructor = new (url: string) => WebSocketLike;

/** What `ws` (Node) adds: the handshake's HTTP answer when it is not 101,
 * so that a busy node's `Retry-After` can be honoured. Browsers do not
 * show a refused handshake's status or headers to pages. */
interface HandshakeAnswers {
  on(event: "unexpected-response", listener: (req: { destroy(): void }, res: { statusCode?: number; headers: Record<string, string | string[] | undefined>; resume?(): void }) => void): void;
  terminate?(): void;
}

/** The close reason of a draining node names when to come back (v3). */
const RECONNECT_HINT = /reconnect_after_ms=(\d+)/;

/** Where the client is in its life. */
export type State = "connecting" | "open" | "reconnecting" | "closed";

export interface ConnectOptions {
  /** The node: `ws://host:port` or `wss://…` (`/ws` is added if absent). */
  url: string;
  /** Authentication off (development): the client names itself. */
  clientId?: string;
  /** A JWT whose `sub` is the client id. */
  token?: string;
  /** Called for a fresh token before every connect and reconnect (tokens
   * expire). */
  getToken?: () => string | Promise<string>;
  /** This session's device (one session per device; default `default`). */
  device?: string;
  /** Acks mode: messages carry a `seq`, confirmed lazily, and a dropped
   * connection is resumed with nothing lost. Default true. */
  acks?: boolean;
  /** The WebSocket to use; default the runtime's global one (browsers,
   * Node 22+). On Node 20 pass `ws`'s. */
  WebSocket?: WebSocketConstructor;
  /** Reconnect with exponential backoff and full jitter; `false` to not
   * reconnect. Default: from 500 ms, doubling, up to 30 s. */
  reconnect?: false | { initialDelayMs?: number; maxDelayMs?: number };
  /** Sends queued while disconnected, at most; beyond, `send` rejects
   * with `QueueFull`. Default 256. */
  maxQueued?: number;
  /** Acks mode: confirm after this many messages, or this long after
   * the first unconfirmed one. Defaults 32 and 200 ms. */
  confirmEvery?: number;
  confirmAfterMs?: number;
}

export interface SendOptions {
  /** Ask for `delivered` receipts (sends to a client). */
  receipt?: boolean;
  /** Keep it in the recipient's inbox if the recipient is offline (on a
   * node with an inbox). */
  store?: boolean;
  /** v3: `false` keeps it out of its conversation's history (on a node
   * with history). */
  history?: boolean;
}

/** What finally became of a send: `delivered` (at least one of the
 * recipient's sessions got it; confirmed, in acks mode), `offline`
 * (none did: `reason` says why), `stored` (offline, and kept in the
 * recipient's inbox), or `unknown` (this client's session ended and could
 * not be resumed before the receipts came). */
export interface Outcome {
  status: "delivered" | "offline" | "stored" | "unknown";
  reason?: OfflineReason;
  /** One per recipient session that answered. */
  receipts: ReceiptFrame[];
}

/** The ack of a send, and (for a send to a client with `receipt: true`,
 * or an `offline` one) the promise of its final outcome. */
export interface Sent extends AckFrame {
  outcome?: Promise<Outcome>;
}

/** The answer to `watch`: which of the clients asked for are watched,
 * and which this client may not watch. */
export interface Watching {
  clients: string[];
  denied: string[];
}

/** What a client emits. */
export interface ClientEvents {
  /** The state changed. */
  state: State;
  /** A session began (or was resumed: `welcome.resumed`). */
  welcome: WelcomeFrame;
  /** A message for this client (`carbon` on a copy of what it sent from
   * another device, `stored` on one from its inbox). */
  message: MessageFrame;
  /** A later outcome of a message this client sent, at one session. */
  receipt: ReceiptFrame;
  /** v3: a watched client's state (see `watch`). */
  presence: PresenceFrame;
  /** v3: a signal from another client ("typing…"). */
  signal: SignalFrame;
  /** v3: a read cursor moved (this client's, on another device; or the
   * other client's in a two-client conversation). */
  read: ReadFrame;
  /** An error frame that answers no pending request. */
  error: SwitchboardError;
  /** The connection ended (a reconnect may follow). */
  disconnect: { code: number; reason: string };
  /** The next connect is due in `delayMs` (attempt counts from 1). */
  retry: { attempt: number; delayMs: number };
}

type Listener<T> = (value: T) => void;

interface Pending {
  id: string;
  frame: string;
  receipt: boolean;
  resolve: (sent: Sent) => void;
  reject: (error: SwitchboardError) => void;
}

/** What a v3 request is answered with. */
type Answer = WatchingFrame | OkFrame | HistoryFrame | ConversationsFrame;

/** A request answered `watching`, `ok`, `history` or `conversations`. */
interface Call {
  resolve: (frame: Answer) => void;
  reject: (error: SwitchboardError) => void;
}

/** At most this many ids in one `watch` frame (the protocol's limit). */
const WATCH_CHUNK = 256;

interface Tracked {
  expected: number;
  receipts: ReceiptFrame[];
  resolve: (outcome: Outcome) => void;
}

const OPEN = 1;

/** Opens a client: it connects at once, and reconnects (resuming, in
 * acks mode) until `close()`. */
export function connect(options: ConnectOptions): Client {
  const client = new Client(options);
  client.start();
  return client;
}

export class Client {
  private readonly options: ConnectOptions;
  private readonly Socket: WebSocketConstructor;
  private ws: WebSocketLike | null = null;
  private currentState: State = "connecting";
  private currentWelcome: WelcomeFrame | null = null;
  private listeners: { [K in keyof ClientEvents]?: Set<Listener<ClientEvents[K]>> } = {};
  private nextId = 1;
  /** Written, waiting for their ack, by `id`. */
  private inFlight = new Map<string, Pending>();
  /** Ids of the requests written (sends and pings), in order: the node
   * answers them in this order. */
  private answerOrder: string[] = [];
  /** Not written yet (disconnected), in order. */
  private queued: Pending[] = [];
  private pings = new Map<string, { resolve: () => void; reject: (e: SwitchboardError) => void }>();
  /** v3 requests waiting for `watching` or `ok`, by `id`. */
  private calls = new Map<string, Call>();
  /** v3: the clients the application watches, kept across sessions: a
   * fresh session watches them again by itself. */
  private watched = new Set<string>();
  /** v3: those the node said this client may not watch. */
  private denied = new Set<string>();
  /** v3: watched or unwatched while disconnected, for a resumed session
   * (which kept its watches) to catch up on. */
  private unsentWatch = new Set<string>();
  private unsentUnwatch = new Set<string>();
  /** v3: the last presence frame of each watched client. */
  private presence = new Map<string, PresenceFrame>();
  /** v3: settles once the current session has caught up on its watches. */
  private rewatched: Promise<void> = Promise.resolve();
  private tracked = new Map<string, Tracked>();
  private resumeToken: string | null = null;
  private lastSeq = 0;
  private confirmedSeq = 0;
  private confirmTimer: ReturnType<typeof setTimeout> | null = null;
  private retryTimer: ReturnType<typeof setTimeout> | null = null;
  private attempt = 0;
  /** A busy node's Retry-After: no connect before this (ms since epoch). */
  private notBefore = 0;
  /** A draining node's hint for the next reconnect, in ms. */
  private hintMs: number | null = null;
  private wanted = true;
  private readyWaiters: Array<{ resolve: (w: WelcomeFrame) => void; reject: (e: SwitchboardError) => void }> = [];

  constructor(options: ConnectOptions) {
    if (!options.clientId && !options.token && !options.getToken) {
      throw new TypeError("connect: give clientId (authentication off), token or getToken");
    }
    const Socket =
      options.WebSocket ??
      (globalThis as { WebSocket?: WebSocketConstructor }).WebSocket;
    if (!Socket) {
      throw new TypeError(
        "connect: this runtime has no WebSocket; pass options.WebSocket (on Node 20: the ws package's)",
      );
    }
    this.options = { acks: true, ...options };
    this.Socket = Socket;
  }

  /** Where the client is in its life. */
  get state(): State {
    return this.currentState;
  }

  /** The current session's welcome, once there is one. */
  get welcome(): WelcomeFrame | null {
    return this.currentWelcome;
  }

  /** Listens for `event`; returns the function that stops listening. */
  on<K extends keyof ClientEvents>(event: K, listener: Listener<ClientEvents[K]>): () => void {
    let set = this.listeners[event] as Set<Listener<ClientEvents[K]>> | undefined;
    if (!set) {
      set = new Set();
      (this.listeners as Record<string, unknown>)[event] = set;
    }
    set.add(listener);
    return () => set.delete(listener);
  }

  /** Resolves with the welcome once a session is open (at once if one
   * is); rejects if the client is closed first. */
  ready(): Promise<WelcomeFrame> {
    if (this.currentState === "open" && this.currentWelcome) {
      return Promise.resolve(this.currentWelcome);
    }
    if (this.currentState === "closed") {
      return Promise.reject(new Closed("closed", "the client is closed"));
    }
    return new Promise((resolve, reject) => this.readyWaiters.push({ resolve, reject }));
  }

  /** Sends `body` to client `to`: resolves with the ack (and the promise
   * of its outcome), or rejects with a typed error. */
  send(to: string, body: unknown, options: SendOptions = {}): Promise<Sent> {
    const receipt = options.receipt === true;
    const history = options.history === false ? false : undefined;
    return this.request({ type: "send", to, body, receipt: receipt || undefined, store: options.store || undefined, history }, receipt);
  }

  /** Sends `body` to every member of `group` (the ack counts each branch). */
  sendGroup(group: string, body: unknown): Promise<Sent> {
    return this.request({ type: "send", group, body }, false);
  }

  /** A round trip to the node. */
  ping(): Promise<void> {
    const id = `p-${this.nextId++}`;
    return new Promise((resolve, reject) => {
      if (!this.isOpen()) {
        reject(new ConnectionLost("connection_lost", "not connected"));
        return;
      }
      this.pings.set(id, { resolve, reject });
      this.answerOrder.push(id);
      this.write({ type: "ping", id });
    });
  }

  // ---- Presence and signals (v3) ----------------------------------------

  /** Watches these clients' presence: resolves with those watched and
   * those denied; their state then comes as `presence` events, at once
   * and on every change. Watches are kept by this client: a new session
   * after a reconnect watches them again by itself (a resumed one kept
   * them). While disconnected, resolves once the next session has them. */
  async watch(clients: string[]): Promise<Watching> {
    const added = clients.filter((c) => !this.watched.has(c));
    for (const c of clients) {
      this.watched.add(c);
      this.unsentUnwatch.delete(c);
    }
    if (!this.isOpen()) {
      for (const c of clients) this.unsentWatch.add(c);
      await this.ready();
      await this.rewatched;
      return this.verdict(clients);
    }
    try {
      await this.sendWatches("watch", clients);
    } catch (error) {
      // Refused (too many, or the node's store is away): not watched,
      // and not asked for again by the next session. A dropped
      // connection keeps them: the next session asks.
      if (!(error instanceof ConnectionLost)) {
        for (const c of added) this.watched.delete(c);
      }
      throw error;
    }
    return this.verdict(clients);
  }

  /** Stops watching these clients. */
  async unwatch(clients: string[]): Promise<void> {
    for (const c of clients) {
      this.watched.delete(c);
      this.denied.delete(c);
      this.presence.delete(c);
      this.unsentWatch.delete(c);
    }
    if (!this.isOpen()) {
      for (const c of clients) this.unsentUnwatch.add(c);
      return;
    }
    await this.sendWatches("unwatch", clients);
  }

  /** The last presence frame of a watched client, if any came yet. */
  presenceOf(client: string): PresenceFrame | undefined {
    return this.presence.get(client);
  }

  /** Listens for presence frames; returns the function that stops. */
  onPresence(listener: (frame: PresenceFrame) => void): () => void {
    return this.on("presence", listener);
  }

  /** Listens for signals; returns the function that stops. */
  onSignal(listener: (frame: SignalFrame) => void): () => void {
    return this.on("signal", listener);
  }

  /** Invisible (`false`) or visible again (`true`): while invisible,
   * watchers see this client offline, on every device, and messages
   * still arrive. Kept by the node across reconnects. */
  async setVisible(visible: boolean): Promise<void> {
    await this.call({ type: "visibility", visible });
  }

  /** Sends a signal ("typing…") to client `to`: never acked or kept, and
   * dropped by the node when over its rate or when the recipient is slow.
   * Returns whether it was written (not while disconnected). */
  signal(to: string, body: unknown): boolean {
    return this.writeSignal({ type: "signal", to, body });
  }

  /** Sends a signal to every other session of `group`'s members. */
  signalGroup(group: string, body: unknown): boolean {
    return this.writeSignal({ type: "signal", group, body });
  }

  private writeSignal(frame: ClientFrame): boolean {
    if (!this.isOpen()) return false;
    this.write(frame);
    return true;
  }

  private verdict(clients: string[]): Watching {
    return {
      clients: clients.filter((c) => this.watched.has(c) && !this.denied.has(c)),
      denied: clients.filter((c) => this.denied.has(c)),
    };
  }

  /** `watch` or `unwatch` frames for `clients`, at most 256 ids each. */
  private async sendWatches(type: "watch" | "unwatch", clients: string[]): Promise<void> {
    const chunks: string[][] = [];
    for (let i = 0; i < clients.length; i += WATCH_CHUNK) chunks.push(clients.slice(i, i + WATCH_CHUNK));
    const answers = await Promise.all(chunks.map((chunk) => this.call({ type, clients: chunk })));
    for (const answer of answers) {
      if (answer.type !== "watching") continue;
      for (const c of answer.clients) this.denied.delete(c);
      for (const c of answer.denied) this.denied.add(c);
    }
  }

  /** After a welcome: a fresh session watches everything again; a
   * resumed one catches up on what changed while disconnected. */
  private async catchUp(resumed: boolean): Promise<void> {
    const watch = resumed ? [...this.unsentWatch] : [...this.watched];
    const unwatch = resumed ? [...this.unsentUnwatch] : [];
    this.unsentWatch.clear();
    this.unsentUnwatch.clear();
    try {
      await Promise.all([
        watch.length ? this.sendWatches("watch", watch) : undefined,
        unwatch.length ? this.sendWatches("unwatch", unwatch) : undefined,
      ]);
    } catch (error) {
      if (error instanceof SwitchboardError && error.code !== "connection_lost") this.emit("error", error);
    }
  }

  // ---- History and read state (v3) ------------------------------------

  /** A page of a conversation (`{with: "bob"}` or `{group: "team"}`):
   * message frames, oldest first, each with its `cseq`; `before` or
   * `after` a cseq, or the newest; `more` says whether others lie beyond. */
  async history(
    thread: Thread,
    page: { before?: number; after?: number; limit?: number } = {},
  ): Promise<HistoryFrame> {
    const answer = await this.call({ type: "history", ...thread, ...page });
    return answer as HistoryFrame;
  }

  /** This client's conversations, most recent first, with their last
   * message, unread counts and read cursors. */
  async conversations(page: { before?: number; limit?: number } = {}): Promise<ConversationsFrame> {
    const answer = await this.call({ type: "conversations", ...page });
    return answer as ConversationsFrame;
  }

  /** This client has read `thread` up to `upto` (a cseq): its other
   * devices, and the other client of a two-client conversation, hear it
   * as a `read` event. */
  async markRead(thread: Thread, upto: number): Promise<void> {
    await this.call({ type: "read", ...thread, upto });
  }

  /** Listens for read receipts; returns the function that stops. */
  onRead(listener: (frame: ReadFrame) => void): () => void {
    return this.on("read", listener);
  }

  /** A request answered `watching`, `ok`, `history` or `conversations`
   * (or an error). */
  private call(frame: ClientFrame): Promise<Answer> {
    return new Promise((resolve, reject) => {
      if (!this.isOpen()) {
        reject(new ConnectionLost("connection_lost", "not connected"));
        return;
      }
      const id = `w-${this.nextId++}`;
      this.calls.set(id, { resolve, reject });
      this.answerOrder.push(id);
      this.write({ ...frame, id } as ClientFrame);
    });
  }

  /** Ends the session (a client close: it is not resumed) and stops
   * reconnecting. Queued sends reject with `Closed`. Resolves with the
   * close code and reason the socket reported once it has closed (`null`
   * when there was no connection). */
  close(): Promise<{ code: number; reason: string } | null> {
    this.wanted = false;
    this.clearTimers();
    this.confirmNow();
    const ws = this.ws;
    this.ws = null;
    let closed: Promise<{ code: number; reason: string } | null> = Promise.resolve(null);
    if (ws) {
      closed = new Promise((resolve) => {
        ws.onclose = (event) => resolve({ code: event.code, reason: event.reason });
      });
      ws.onmessage = null;
      ws.close(CloseCode.Normal);
    }
    const lost = new ConnectionLost("connection_lost", "closed before the ack; the send may or may not have been routed");
    for (const [, pending] of this.inFlight) pending.reject(lost);
    this.inFlight.clear();
    for (const [, ping] of this.pings) ping.reject(lost);
    this.pings.clear();
    for (const [, call] of this.calls) call.reject(lost);
    this.calls.clear();
    this.answerOrder = [];
    this.failAll(new Closed("closed", "the client was closed"));
    this.setState("closed");
    return closed;
  }

  /** Starts connecting (`connect` does this). */
  start(): void {
    void this.open();
  }

  // ---- The connection ---------------------------------------------------

  private async open(): Promise<void> {
    if (!this.wanted) return;
    let url: string;
    try {
      url = await this.sessionUrl();
    } catch (error) {
      this.emit("error", new ConnectionLost("connection_lost", `getToken failed: ${String(error)}`));
      this.retry();
      return;
    }
    if (!this.wanted) return;
    const ws = new this.Socket(url);
    this.ws = ws;
    const answers = ws as unknown as Partial<HandshakeAnswers>;
    if (typeof answers.on === "function") {
      answers.on("unexpected-response", (req, res) => {
        const header = res.headers["retry-after"];
        const seconds = Number(Array.isArray(header) ? header[0] : header);
        if (res.statusCode === 503 && Number.isFinite(seconds) && seconds > 0) {
          // Whole seconds: up to one more at random, so that clients told
          // the same second do not all come back at the same instant.
          this.notBefore = Date.now() + seconds * 1000 + Math.random() * 1000;
        }
        res.resume?.();
        req.destroy();
        // Ends the attempt: onclose follows (1006), then the retry.
        answers.terminate?.();
      });
    }
    let welcomed = false;
    ws.onmessage = (event) => {
      const text = typeof event.data === "string" ? event.data : String(event.data);
      let frame: ServerFrame;
      try {
        frame = JSON.parse(text) as ServerFrame;
      } catch {
        return;
      }
      if (!welcomed) {
        if (frame.type !== "welcome") return;
        welcomed = true;
        this.welcomed(frame);
        return;
      }
      this.receive(frame);
    };
    ws.onclose = (event) => {
      if (this.ws !== ws) return;
      this.ws = null;
      this.lost(event.code, event.reason);
    };
    ws.onerror = () => {
      // onclose follows with the code.
    };
  }

  private async sessionUrl(): Promise<string> {
    const o = this.options;
    let base = o.url.replace(/\/+$/, "");
    if (!/\/ws$/.test(base)) base += "/ws";
    const query = new URLSearchParams();
    const token = o.getToken ? await o.getToken() : o.token;
    if (token) query.set("token", token);
    else if (o.clientId) query.set("client_id", o.clientId);
    if (o.device) query.set("device", o.device);
    if (o.acks) {
      query.set("acks", "1");
      if (this.resumeToken) {
        query.set("resume", this.resumeToken);
        query.set("upto", String(this.lastSeq));
      }
    }
    return `${base}?${query}`;
  }

  private welcomed(welcome: WelcomeFrame): void {
    const resumed = welcome.resumed === true;
    if (!resumed) {
      // A new session: what the old one owed is not coming.
      this.lastSeq = 0;
      this.confirmedSeq = 0;
      for (const [, t] of this.tracked) {
        t.resolve({ status: "unknown", receipts: t.receipts });
      }
      this.tracked.clear();
    }
    this.resumeToken = welcome.resume_token ?? null;
    this.currentWelcome = welcome;
    this.attempt = 0;
    this.setState("open");
    // Before anyone waiting for the session hears of it: they wait for
    // its watches too.
    this.rewatched = this.catchUp(resumed);
    this.emit("welcome", welcome);
    for (const waiter of this.readyWaiters.splice(0)) waiter.resolve(welcome);
    // What waited while disconnected goes out now, in order.
    for (const pending of this.queued.splice(0)) this.transmit(pending);
  }

  private lost(code: number, reason: string): void {
    this.clearConfirmTimer();
    const hint = RECONNECT_HINT.exec(reason ?? "");
    this.hintMs = hint ? Math.min(Number(hint[1]), 60_000) : null;
    this.emit("disconnect", { code, reason });
    // Sent, not acked: the node may or may not have routed them.
    for (const [, pending] of this.inFlight) {
      pending.reject(new ConnectionLost("connection_lost", "the connection dropped before the ack; the send may or may not have been routed"));
    }
    this.inFlight.clear();
    for (const [, ping] of this.pings) ping.reject(new ConnectionLost("connection_lost", "the connection dropped before the pong"));
    this.pings.clear();
    for (const [, call] of this.calls) call.reject(new ConnectionLost("connection_lost", "the connection dropped before the answer"));
    this.calls.clear();
    this.answerOrder = [];
    if (code === CloseCode.Replaced) {
      // Another session of this device took over: reconnecting would
      // close that one.
      this.wanted = false;
      this.failAll(new Closed("closed", "replaced by a newer session of this device (4001)"));
      this.setState("closed");
      return;
    }
    if (!this.wanted || this.options.reconnect === false) {
      this.wanted = false;
      this.failAll(new Closed("closed", `the session ended (${code}${reason ? ` ${reason}` : ""})`));
      this.setState("closed");
      return;
    }
    this.retry();
  }

  private retry(): void {
    if (!this.wanted) return;
    this.setState("reconnecting");
    const settings = this.options.reconnect || {};
    const initial = settings.initialDelayMs ?? 500;
    const max = settings.maxDelayMs ?? 30_000;
    // Full jitter: anywhere up to the doubled ceiling; a draining node's
    // hint instead when it gave one; never before a busy node's
    // Retry-After.
    const ceiling = Math.min(max, initial * 2 ** this.attempt);
    const backoff = this.hintMs ?? Math.random() * ceiling;
    this.hintMs = null;
    const delay = Math.max(backoff, this.notBefore - Date.now());
    this.attempt += 1;
    this.emit("retry", { attempt: this.attempt, delayMs: delay });
    this.retryTimer = setTimeout(() => {
      this.retryTimer = null;
      void this.open();
    }, delay);
  }

  // ---- Frames -------------------------------------------------------------

  private receive(frame: ServerFrame): void {
    switch (frame.type) {
      case "message":
        this.message(frame);
        break;
      case "ack":
        this.acked(frame);
        break;
      case "receipt":
        this.receipt(frame);
        break;
      case "error": {
        const error = fromFrame(frame.code, frame.message, frame.reason);
        // The node answers every frame, in reading order: an error that
        // names no id (a frame too large to read) answers the oldest.
        const id = frame.id ?? this.answerOrder[0];
        const pending = id ? this.inFlight.get(id) : undefined;
        const ping = id ? this.pings.get(id) : undefined;
        const call = id ? this.calls.get(id) : undefined;
        if (id) this.answered(id);
        if (pending) pending.reject(error);
        else if (ping) ping.reject(error);
        else if (call) call.reject(error);
        else this.emit("error", error);
        break;
      }
      case "watching":
      case "ok":
      case "history":
      case "conversations": {
        const call = frame.id ? this.calls.get(frame.id) : undefined;
        if (call && frame.id) {
          this.answered(frame.id);
          call.resolve(frame);
        }
        break;
      }
      case "presence":
        // One that crossed an unwatch on its way is not news.
        if (!this.watched.has(frame.client_id)) break;
        this.presence.set(frame.client_id, frame);
        this.emit("presence", frame);
        break;
      case "signal":
        this.emit("signal", frame);
        break;
      case "read":
        this.emit("read", frame);
        break;
      case "pong": {
        const ping = frame.id ? this.pings.get(frame.id) : undefined;
        if (ping && frame.id) {
          this.answered(frame.id);
          ping.resolve();
        }
        break;
      }
      default:
        break;
    }
  }

  private message(frame: MessageFrame): void {
    if (frame.seq !== undefined) {
      // Written again after a resume: already seen.
      if (frame.seq <= this.lastSeq) return;
      this.lastSeq = frame.seq;
      this.confirmLater();
    }
    this.emit("message", frame);
  }

  private acked(ack: AckFrame): void {
    const pending = ack.id ? this.inFlight.get(ack.id) : undefined;
    if (!pending || !ack.id) return;
    this.answered(ack.id);
    const sent: Sent = { ...ack };
    if (ack.status === "offline") {
      sent.outcome = Promise.resolve({
        status: ack.stored ? "stored" : "offline",
        reason: ack.reason,
        receipts: [],
      });
    } else if (pending.receipt && ack.sessions !== undefined && ack.sessions > 0) {
      sent.outcome = new Promise((resolve) => {
        this.tracked.set(ack.msg_id, { expected: ack.sessions ?? 0, receipts: [], resolve });
      });
    }
    pending.resolve(sent);
  }

  private receipt(frame: ReceiptFrame): void {
    this.emit("receipt", frame);
    const tracked = this.tracked.get(frame.msg_id);
    if (!tracked) return;
    tracked.receipts.push(frame);
    if (tracked.receipts.length < tracked.expected) return;
    this.tracked.delete(frame.msg_id);
    const delivered = tracked.receipts.some((r) => r.status === "delivered");
    tracked.resolve({
      status: delivered ? "delivered" : "offline",
      reason: delivered ? undefined : tracked.receipts[0]?.reason,
      receipts: tracked.receipts,
    });
  }

  // ---- Sending --------------------------------------------------------------

  private request(frame: Omit<ClientFrame & { type: "send" }, "id">, receipt: boolean): Promise<Sent> {
    return new Promise((resolve, reject) => {
      if (this.currentState === "closed") {
        reject(new Closed("closed", "the client is closed"));
        return;
      }
      const id = `c-${this.nextId++}`;
      const pending: Pending = {
        id,
        frame: JSON.stringify({ ...frame, id }),
        receipt,
        resolve,
        reject,
      };
      if (this.isOpen()) {
        this.transmit(pending);
        return;
      }
      const max = this.options.maxQueued ?? 256;
      if (this.queued.length >= max) {
        reject(new QueueFull("queue_full", `${max} sends already wait for the connection`));
        return;
      }
      this.queued.push(pending);
    });
  }

  private transmit(pending: Pending): void {
    this.inFlight.set(pending.id, pending);
    this.answerOrder.push(pending.id);
    this.ws?.send(pending.frame);
  }

  /** The request `id` got its answer. */
  private answered(id: string): void {
    this.inFlight.delete(id);
    this.pings.delete(id);
    this.calls.delete(id);
    const at = this.answerOrder.indexOf(id);
    if (at >= 0) this.answerOrder.splice(at, 1);
  }

  private write(frame: ClientFrame): void {
    this.ws?.send(JSON.stringify(frame));
  }

  private isOpen(): boolean {
    return this.currentState === "open" && this.ws !== null && this.ws.readyState === OPEN;
  }

  // ---- Acks mode: lazy confirmation ------------------------------------------

  private confirmLater(): void {
    const every = this.options.confirmEvery ?? 32;
    if (this.lastSeq - this.confirmedSeq >= every) {
      this.confirmNow();
    } else if (!this.confirmTimer) {
      this.confirmTimer = setTimeout(() => this.confirmNow(), this.options.confirmAfterMs ?? 200);
    }
  }

  private confirmNow(): void {
    this.clearConfirmTimer();
    if (this.lastSeq > this.confirmedSeq && this.isOpen()) {
      this.write({ type: "received", upto: this.lastSeq });
      this.confirmedSeq = this.lastSeq;
    }
  }

  private clearConfirmTimer(): void {
    if (this.confirmTimer) clearTimeout(this.confirmTimer);
    this.confirmTimer = null;
  }

  private clearTimers(): void {
    this.clearConfirmTimer();
    if (this.retryTimer) clearTimeout(this.retryTimer);
    this.retryTimer = null;
  }

  // ---- Plumbing -------------------------------------------------------------

  private failAll(error: SwitchboardError): void {
    for (const pending of this.queued.splice(0)) pending.reject(error);
    for (const [, pending] of this.inFlight) pending.reject(error);
    this.inFlight.clear();
    for (const waiter of this.readyWaiters.splice(0)) waiter.reject(error);
    for (const [, t] of this.tracked) t.resolve({ status: "unknown", receipts: t.receipts });
    this.tracked.clear();
  }

  private setState(state: State): void {
    if (state === this.currentState) return;
    this.currentState = state;
    this.emit("state", state);
  }

  private emit<K extends keyof ClientEvents>(event: K, value: ClientEvents[K]): void {
    const set = this.listeners[event] as Set<Listener<ClientEvents[K]>> | undefined;
    if (!set) return;
    for (const listener of [...set]) {
      try {
        listener(value);
      } catch (error) {
        // A listener's bug must not break the client.
        setTimeout(() => {
          throw error;
        });
      }
    }
  }
}
