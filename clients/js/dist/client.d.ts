import { SwitchboardError } from "./errors.js";
import type { AckFrame, ConversationsFrame, HistoryFrame, MessageFrame, OfflineReason, PresenceFrame, ReadFrame, ReceiptFrame, SignalFrame, Thread, WelcomeFrame } from "./protocol.js";
/** What this client needs of a WebSocket: the browser's, Node 22's
 * global one, or `ws`'s. */
export interface WebSocketLike {
    readonly readyState: number;
    send(data: string): void;
    close(code?: number, reason?: string): void;
    onopen: ((event: unknown) => void) | null;
    onmessage: ((event: {
        data: unknown;
    }) => void) | null;
    onclose: ((event: {
        code: number;
        reason: string;
    }) => void) | null;
    onerror: ((event: unknown) => void) | null;
}
export type WebSocketConstructor = new (url: string) => WebSocketLike;
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
    reconnect?: false | {
        initialDelayMs?: number;
        maxDelayMs?: number;
    };
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
    disconnect: {
        code: number;
        reason: string;
    };
    /** The next connect is due in `delayMs` (attempt counts from 1). */
    retry: {
        attempt: number;
        delayMs: number;
    };
}
type Listener<T> = (value: T) => void;
/** Opens a client: it connects at once, and reconnects (resuming, in
 * acks mode) until `close()`. */
export declare function connect(options: ConnectOptions): Client;
export declare class Client {
    private readonly options;
    private readonly Socket;
    private ws;
    private currentState;
    private currentWelcome;
    private listeners;
    private nextId;
    /** Written, waiting for their ack, by `id`. */
    private inFlight;
    /** Ids of the requests written (sends and pings), in order: the node
     * answers them in this order. */
    private answerOrder;
    /** Not written yet (disconnected), in order. */
    private queued;
    private pings;
    /** v3 requests waiting for `watching` or `ok`, by `id`. */
    private calls;
    /** v3: the clients the application watches, kept across sessions: a
     * fresh session watches them again by itself. */
    private watched;
    /** v3: those the node said this client may not watch. */
    private denied;
    /** v3: watched or unwatched while disconnected, for a resumed session
     * (which kept its watches) to catch up on. */
    private unsentWatch;
    private unsentUnwatch;
    /** v3: the last presence frame of each watched client. */
    private presence;
    /** v3: settles once the current session has caught up on its watches. */
    private rewatched;
    private tracked;
    private resumeToken;
    private lastSeq;
    private confirmedSeq;
    private confirmTimer;
    private retryTimer;
    private attempt;
    /** A busy node's Retry-After: no connect before this (ms since epoch). */
    private notBefore;
    /** A draining node's hint for the next reconnect, in ms. */
    private hintMs;
    private wanted;
    private readyWaiters;
    constructor(options: ConnectOptions);
    /** Where the client is in its life. */
    get state(): State;
    /** The current session's welcome, once there is one. */
    get welcome(): WelcomeFrame | null;
    /** Listens for `event`; returns the function that stops listening. */
    on<K extends keyof ClientEvents>(event: K, listener: Listener<ClientEvents[K]>): () => void;
    /** Resolves with the welcome once a session is open (at once if one
     * is); rejects if the client is closed first. */
    ready(): Promise<WelcomeFrame>;
    /** Sends `body` to client `to`: resolves with the ack (and the promise
     * of its outcome), or rejects with a typed error. */
    send(to: string, body: unknown, options?: SendOptions): Promise<Sent>;
    /** Sends `body` to every member of `group` (the ack counts each branch). */
    sendGroup(group: string, body: unknown): Promise<Sent>;
    /** A round trip to the node. */
    ping(): Promise<void>;
    /** Watches these clients' presence: resolves with those watched and
     * those denied; their state then comes as `presence` events, at once
     * and on every change. Watches are kept by this client: a new session
     * after a reconnect watches them again by itself (a resumed one kept
     * them). While disconnected, resolves once the next session has them. */
    watch(clients: string[]): Promise<Watching>;
    /** Stops watching these clients. */
    unwatch(clients: string[]): Promise<void>;
    /** The last presence frame of a watched client, if any came yet. */
    presenceOf(client: string): PresenceFrame | undefined;
    /** Listens for presence frames; returns the function that stops. */
    onPresence(listener: (frame: PresenceFrame) => void): () => void;
    /** Listens for signals; returns the function that stops. */
    onSignal(listener: (frame: SignalFrame) => void): () => void;
    /** Invisible (`false`) or visible again (`true`): while invisible,
     * watchers see this client offline, on every device, and messages
     * still arrive. Kept by the node across reconnects. */
    setVisible(visible: boolean): Promise<void>;
    /** Sends a signal ("typing…") to client `to`: never acked or kept, and
     * dropped by the node when over its rate or when the recipient is slow.
     * Returns whether it was written (not while disconnected). */
    signal(to: string, body: unknown): boolean;
    /** Sends a signal to every other session of `group`'s members. */
    signalGroup(group: string, body: unknown): boolean;
    private writeSignal;
    private verdict;
    /** `watch` or `unwatch` frames for `clients`, at most 256 ids each. */
    private sendWatches;
    /** After a welcome: a fresh session watches everything again; a
     * resumed one catches up on what changed while disconnected. */
    private catchUp;
    /** A page of a conversation (`{with: "bob"}` or `{group: "team"}`):
     * message frames, oldest first, each with its `cseq`; `before` or
     * `after` a cseq, or the newest; `more` says whether others lie beyond. */
    history(thread: Thread, page?: {
        before?: number;
        after?: number;
        limit?: number;
    }): Promise<HistoryFrame>;
    /** This client's conversations, most recent first, with their last
     * message, unread counts and read cursors. */
    conversations(page?: {
        before?: number;
        limit?: number;
    }): Promise<ConversationsFrame>;
    /** This client has read `thread` up to `upto` (a cseq): its other
     * devices, and the other client of a two-client conversation, hear it
     * as a `read` event. */
    markRead(thread: Thread, upto: number): Promise<void>;
    /** Listens for read receipts; returns the function that stops. */
    onRead(listener: (frame: ReadFrame) => void): () => void;
    /** A request answered `watching`, `ok`, `history` or `conversations`
     * (or an error). */
    private call;
    /** Ends the session (a client close: it is not resumed) and stops
     * reconnecting. Queued sends reject with `Closed`. Resolves with the
     * close code and reason the socket reported once it has closed (`null`
     * when there was no connection). */
    close(): Promise<{
        code: number;
        reason: string;
    } | null>;
    /** Starts connecting (`connect` does this). */
    start(): void;
    private open;
    private sessionUrl;
    private welcomed;
    private lost;
    private retry;
    private receive;
    private message;
    private acked;
    private receipt;
    private request;
    private transmit;
    /** The request `id` got its answer. */
    private answered;
    private write;
    private isOpen;
    private confirmLater;
    private confirmNow;
    private clearConfirmTimer;
    private clearTimers;
    private failAll;
    private setState;
    private emit;
}
export {};
