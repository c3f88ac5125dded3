import { Closed, ConnectionLost, QueueFull, SwitchboardError, fromFrame, } from "./errors.js";
import { CloseCode } from "./protocol.js";
/** The close reason of a draining node names when to come back (v3). */
const RECONNECT_HINT = /reconnect_after_ms=(\d+)/;
/** At most this many ids in one `watch` frame (the protocol's limit). */
const WATCH_CHUNK = 256;
const OPEN = 1;
/** Opens a client: it connects at once, and reconnects (resuming, in
 * acks mode) until `close()`. */
export function connect(options) {
    const client = new Client(options);
    client.start();
    return client;
}
export class Client {
    constructor(options) {
        this.ws = null;
        this.currentState = "connecting";
        this.currentWelcome = null;
        this.listeners = {};
        this.nextId = 1;
        /** Written, waiting for their ack, by `id`. */
        this.inFlight = new Map();
        /** Ids of the requests written (sends and pings), in order: the node
         * answers them in this order. */
        this.answerOrder = [];
        /** Not written yet (disconnected), in order. */
        this.queued = [];
        this.pings = new Map();
        /** v3 requests waiting for `watching` or `ok`, by `id`. */
        this.calls = new Map();
        /** v3: the clients the application watches, kept across sessions: a
         * fresh session watches them again by itself. */
        this.watched = new Set();
        /** v3: those the node said this client may not watch. */
        this.denied = new Set();
        /** v3: watched or unwatched while disconnected, for a resumed session
         * (which kept its watches) to catch up on. */
        this.unsentWatch = new Set();
        this.unsentUnwatch = new Set();
        /** v3: the last presence frame of each watched client. */
        this.presence = new Map();
        /** v3: settles once the current session has caught up on its watches. */
        this.rewatched = Promise.resolve();
        this.tracked = new Map();
        this.resumeToken = null;
        this.lastSeq = 0;
        this.confirmedSeq = 0;
        this.confirmTimer = null;
        this.retryTimer = null;
        this.attempt = 0;
        /** A busy node's Retry-After: no connect before this (ms since epoch). */
        this.notBefore = 0;
        /** A draining node's hint for the next reconnect, in ms. */
        this.hintMs = null;
        this.wanted = true;
        this.readyWaiters = [];
        if (!options.clientId && !options.token && !options.getToken) {
            throw new TypeError("connect: give clientId (authentication off), token or getToken");
        }
        const Socket = options.WebSocket ??
            globalThis.WebSocket;
        if (!Socket) {
            throw new TypeError("connect: this runtime has no WebSocket; pass options.WebSocket (on Node 20: the ws package's)");
        }
        this.options = { acks: true, ...options };
        this.Socket = Socket;
    }
    /** Where the client is in its life. */
    get state() {
        return this.currentState;
    }
    /** The current session's welcome, once there is one. */
    get welcome() {
        return this.currentWelcome;
    }
    /** Listens for `event`; returns the function that stops listening. */
    on(event, listener) {
        let set = this.listeners[event];
        if (!set) {
            set = new Set();
            this.listeners[event] = set;
        }
        set.add(listener);
        return () => set.delete(listener);
    }
    /** Resolves with the welcome once a session is open (at once if one
     * is); rejects if the client is closed first. */
    ready() {
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
    send(to, body, options = {}) {
        const receipt = options.receipt === true;
        const history = options.history === false ? false : undefined;
        return this.request({ type: "send", to, body, receipt: receipt || undefined, store: options.store || undefined, history }, receipt);
    }
    /** Sends `body` to every member of `group` (the ack counts each branch). */
    sendGroup(group, body) {
        return this.request({ type: "send", group, body }, false);
    }
    /** A round trip to the node. */
    ping() {
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
    async watch(clients) {
        const added = clients.filter((c) => !this.watched.has(c));
        for (const c of clients) {
            this.watched.add(c);
            this.unsentUnwatch.delete(c);
        }
        if (!this.isOpen()) {
            for (const c of clients)
                this.unsentWatch.add(c);
            await this.ready();
            await this.rewatched;
            return this.verdict(clients);
        }
        try {
            await this.sendWatches("watch", clients);
        }
        catch (error) {
            // Refused (too many, or the node's store is away): not watched,
            // and not asked for again by the next session. A dropped
            // connection keeps them: the next session asks.
            if (!(error instanceof ConnectionLost)) {
                for (const c of added)
                    this.watched.delete(c);
            }
            throw error;
        }
        return this.verdict(clients);
    }
    /** Stops watching these clients. */
    async unwatch(clients) {
        for (const c of clients) {
            this.watched.delete(c);
            this.denied.delete(c);
            this.presence.delete(c);
            this.unsentWatch.delete(c);
        }
        if (!this.isOpen()) {
            for (const c of clients)
                this.unsentUnwatch.add(c);
            return;
        }
        await this.sendWatches("unwatch", clients);
    }
    /** The last presence frame of a watched client, if any came yet. */
    presenceOf(client) {
        return this.presence.get(client);
    }
    /** Listens for presence frames; returns the function that stops. */
    onPresence(listener) {
        return this.on("presence", listener);
    }
    /** Listens for signals; returns the function that stops. */
    onSignal(listener) {
        return this.on("signal", listener);
    }
    /** Invisible (`false`) or visible again (`true`): while invisible,
     * watchers see this client offline, on every device, and messages
     * still arrive. Kept by the node across reconnects. */
    async setVisible(visible) {
        await this.call({ type: "visibility", visible });
    }
    /** Sends a signal ("typing…") to client `to`: never acked or kept, and
     * dropped by the node when over its rate or when the recipient is slow.
     * Returns whether it was written (not while disconnected). */
    signal(to, body) {
        return this.writeSignal({ type: "signal", to, body });
    }
    /** Sends a signal to every other session of `group`'s members. */
    signalGroup(group, body) {
        return this.writeSignal({ type: "signal", group, body });
    }
    writeSignal(frame) {
        if (!this.isOpen())
            return false;
        this.write(frame);
        return true;
    }
    verdict(clients) {
        return {
            clients: clients.filter((c) => this.watched.has(c) && !this.denied.has(c)),
            denied: clients.filter((c) => this.denied.has(c)),
        };
    }
    /** `watch` or `unwatch` frames for `clients`, at most 256 ids each. */
    async sendWatches(type, clients) {
        const chunks = [];
        for (let i = 0; i < clients.length; i += WATCH_CHUNK)
            chunks.push(clients.slice(i, i + WATCH_CHUNK));
        const answers = await Promise.all(chunks.map((chunk) => this.call({ type, clients: chunk })));
        for (const answer of answers) {
            if (answer.type !== "watching")
                continue;
            for (const c of answer.clients)
                this.denied.delete(c);
            for (const c of answer.denied)
                this.denied.add(c);
        }
    }
    /** After a welcome: a fresh session watches everything again; a
     * resumed one catches up on what changed while disconnected. */
    async catchUp(resumed) {
        const watch = resumed ? [...this.unsentWatch] : [...this.watched];
        const unwatch = resumed ? [...this.unsentUnwatch] : [];
        this.unsentWatch.clear();
        this.unsentUnwatch.clear();
        try {
            await Promise.all([
                watch.length ? this.sendWatches("watch", watch) : undefined,
                unwatch.length ? this.sendWatches("unwatch", unwatch) : undefined,
            ]);
        }
        catch (error) {
            if (error instanceof SwitchboardError && error.code !== "connection_lost")
                this.emit("error", error);
        }
    }
    // ---- History and read state (v3) ------------------------------------
    /** A page of a conversation (`{with: "bob"}` or `{group: "team"}`):
     * message frames, oldest first, each with its `cseq`; `before` or
     * `after` a cseq, or the newest; `more` says whether others lie beyond. */
    async history(thread, page = {}) {
        const answer = await this.call({ type: "history", ...thread, ...page });
        return answer;
    }
    /** This client's conversations, most recent first, with their last
     * message, unread counts and read cursors. */
    async conversations(page = {}) {
        const answer = await this.call({ type: "conversations", ...page });
        return answer;
    }
    /** This client has read `thread` up to `upto` (a cseq): its other
     * devices, and the other client of a two-client conversation, hear it
     * as a `read` event. */
    async markRead(thread, upto) {
        await this.call({ type: "read", ...thread, upto });
    }
    /** Listens for read receipts; returns the function that stops. */
    onRead(listener) {
        return this.on("read", listener);
    }
    /** A request answered `watching`, `ok`, `history` or `conversations`
     * (or an error). */
    call(frame) {
        return new Promise((resolve, reject) => {
            if (!this.isOpen()) {
                reject(new ConnectionLost("connection_lost", "not connected"));
                return;
            }
            const id = `w-${this.nextId++}`;
            this.calls.set(id, { resolve, reject });
            this.answerOrder.push(id);
            this.write({ ...frame, id });
        });
    }
    /** Ends the session (a client close: it is not resumed) and stops
     * reconnecting. Queued sends reject with `Closed`. Resolves with the
     * close code and reason the socket reported once it has closed (`null`
     * when there was no connection). */
    close() {
        this.wanted = false;
        this.clearTimers();
        this.confirmNow();
        const ws = this.ws;
        this.ws = null;
        let closed = Promise.resolve(null);
        if (ws) {
            closed = new Promise((resolve) => {
                ws.onclose = (event) => resolve({ code: event.code, reason: event.reason });
            });
            ws.onmessage = null;
            ws.close(CloseCode.Normal);
        }
        const lost = new ConnectionLost("connection_lost", "closed before the ack; the send may or may not have been routed");
        for (const [, pending] of this.inFlight)
            pending.reject(lost);
        this.inFlight.clear();
        for (const [, ping] of this.pings)
            ping.reject(lost);
        this.pings.clear();
        for (const [, call] of this.calls)
            call.reject(lost);
        this.calls.clear();
        this.answerOrder = [];
        this.failAll(new Closed("closed", "the client was closed"));
        this.setState("closed");
        return closed;
    }
    /** Starts connecting (`connect` does this). */
    start() {
        void this.open();
    }
    // ---- The connection ---------------------------------------------------
    async open() {
        if (!this.wanted)
            return;
        let url;
        try {
            url = await this.sessionUrl();
        }
        catch (error) {
            this.emit("error", new ConnectionLost("connection_lost", `getToken failed: ${String(error)}`));
            this.retry();
            return;
        }
        if (!this.wanted)
            return;
        const ws = new this.Socket(url);
        this.ws = ws;
        const answers = ws;
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
            let frame;
            try {
                frame = JSON.parse(text);
            }
            catch {
                return;
            }
            if (!welcomed) {
                if (frame.type !== "welcome")
                    return;
                welcomed = true;
                this.welcomed(frame);
                return;
            }
            this.receive(frame);
        };
        ws.onclose = (event) => {
            if (this.ws !== ws)
                return;
            this.ws = null;
            this.lost(event.code, event.reason);
        };
        ws.onerror = () => {
            // onclose follows with the code.
        };
    }
    async sessionUrl() {
        const o = this.options;
        let base = o.url.replace(/\/+$/, "");
        if (!/\/ws$/.test(base))
            base += "/ws";
        const query = new URLSearchParams();
        const token = o.getToken ? await o.getToken() : o.token;
        if (token)
            query.set("token", token);
        else if (o.clientId)
            query.set("client_id", o.clientId);
        if (o.device)
            query.set("device", o.device);
        if (o.acks) {
            query.set("acks", "1");
            if (this.resumeToken) {
                query.set("resume", this.resumeToken);
                query.set("upto", String(this.lastSeq));
            }
        }
        return `${base}?${query}`;
    }
    welcomed(welcome) {
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
        for (const waiter of this.readyWaiters.splice(0))
            waiter.resolve(welcome);
        // What waited while disconnected goes out now, in order.
        for (const pending of this.queued.splice(0))
            this.transmit(pending);
    }
    lost(code, reason) {
        this.clearConfirmTimer();
        const hint = RECONNECT_HINT.exec(reason ?? "");
        this.hintMs = hint ? Math.min(Number(hint[1]), 60000) : null;
        this.emit("disconnect", { code, reason });
        // Sent, not acked: the node may or may not have routed them.
        for (const [, pending] of this.inFlight) {
            pending.reject(new ConnectionLost("connection_lost", "the connection dropped before the ack; the send may or may not have been routed"));
        }
        this.inFlight.clear();
        for (const [, ping] of this.pings)
            ping.reject(new ConnectionLost("connection_lost", "the connection dropped before the pong"));
        this.pings.clear();
        for (const [, call] of this.calls)
            call.reject(new ConnectionLost("connection_lost", "the connection dropped before the answer"));
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
    retry() {
        if (!this.wanted)
            return;
        this.setState("reconnecting");
        const settings = this.options.reconnect || {};
        const initial = settings.initialDelayMs ?? 500;
        const max = settings.maxDelayMs ?? 30000;
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
    receive(frame) {
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
                if (id)
                    this.answered(id);
                if (pending)
                    pending.reject(error);
                else if (ping)
                    ping.reject(error);
                else if (call)
                    call.reject(error);
                else
                    this.emit("error", error);
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
                if (!this.watched.has(frame.client_id))
                    break;
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
    message(frame) {
        if (frame.seq !== undefined) {
            // Written again after a resume: already seen.
            if (frame.seq <= this.lastSeq)
                return;
            this.lastSeq = frame.seq;
            this.confirmLater();
        }
        this.emit("message", frame);
    }
    acked(ack) {
        const pending = ack.id ? this.inFlight.get(ack.id) : undefined;
        if (!pending || !ack.id)
            return;
        this.answered(ack.id);
        const sent = { ...ack };
        if (ack.status === "offline") {
            sent.outcome = Promise.resolve({
                status: ack.stored ? "stored" : "offline",
                reason: ack.reason,
                receipts: [],
            });
        }
        else if (pending.receipt && ack.sessions !== undefined && ack.sessions > 0) {
            sent.outcome = new Promise((resolve) => {
                this.tracked.set(ack.msg_id, { expected: ack.sessions ?? 0, receipts: [], resolve });
            });
        }
        pending.resolve(sent);
    }
    receipt(frame) {
        this.emit("receipt", frame);
        const tracked = this.tracked.get(frame.msg_id);
        if (!tracked)
            return;
        tracked.receipts.push(frame);
        if (tracked.receipts.length < tracked.expected)
            return;
        this.tracked.delete(frame.msg_id);
        const delivered = tracked.receipts.some((r) => r.status === "delivered");
        tracked.resolve({
            status: delivered ? "delivered" : "offline",
            reason: delivered ? undefined : tracked.receipts[0]?.reason,
            receipts: tracked.receipts,
        });
    }
    // ---- Sending --------------------------------------------------------------
    request(frame, receipt) {
        return new Promise((resolve, reject) => {
            if (this.currentState === "closed") {
                reject(new Closed("closed", "the client is closed"));
                return;
            }
            const id = `c-${this.nextId++}`;
            const pending = {
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
    transmit(pending) {
        this.inFlight.set(pending.id, pending);
        this.answerOrder.push(pending.id);
        this.ws?.send(pending.frame);
    }
    /** The request `id` got its answer. */
    answered(id) {
        this.inFlight.delete(id);
        this.pings.delete(id);
        this.calls.delete(id);
        const at = this.answerOrder.indexOf(id);
        if (at >= 0)
            this.answerOrder.splice(at, 1);
    }
    write(frame) {
        this.ws?.send(JSON.stringify(frame));
    }
    isOpen() {
        return this.currentState === "open" && this.ws !== null && this.ws.readyState === OPEN;
    }
    // ---- Acks mode: lazy confirmation ------------------------------------------
    confirmLater() {
        const every = this.options.confirmEvery ?? 32;
        if (this.lastSeq - this.confirmedSeq >= every) {
            this.confirmNow();
        }
        else if (!this.confirmTimer) {
            this.confirmTimer = setTimeout(() => this.confirmNow(), this.options.confirmAfterMs ?? 200);
        }
    }
    confirmNow() {
        this.clearConfirmTimer();
        if (this.lastSeq > this.confirmedSeq && this.isOpen()) {
            this.write({ type: "received", upto: this.lastSeq });
            this.confirmedSeq = this.lastSeq;
        }
    }
    clearConfirmTimer() {
        if (this.confirmTimer)
            clearTimeout(this.confirmTimer);
        this.confirmTimer = null;
    }
    clearTimers() {
        this.clearConfirmTimer();
        if (this.retryTimer)
            clearTimeout(this.retryTimer);
        this.retryTimer = null;
    }
    // ---- Plumbing -------------------------------------------------------------
    failAll(error) {
        for (const pending of this.queued.splice(0))
            pending.reject(error);
        for (const [, pending] of this.inFlight)
            pending.reject(error);
        this.inFlight.clear();
        for (const waiter of this.readyWaiters.splice(0))
            waiter.reject(error);
        for (const [, t] of this.tracked)
            t.resolve({ status: "unknown", receipts: t.receipts });
        this.tracked.clear();
    }
    setState(state) {
        if (state === this.currentState)
            return;
        this.currentState = state;
        this.emit("state", state);
    }
    emit(event, value) {
        const set = this.listeners[event];
        if (!set)
            return;
        for (const listener of [...set]) {
            try {
                listener(value);
            }
            catch (error) {
                // A listener's bug must not break the client.
                setTimeout(() => {
                    throw error;
                });
            }
        }
    }
}
