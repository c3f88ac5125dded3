import { SwitchboardError } from "./errors.js";
import type { AckFrame, MessageFrame, OfflineReason, ReceiptFrame, WelcomeFrame } from "./protocol.js";
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
    private tracked;
    private resumeToken;
    private lastSeq;
    private confirmedSeq;
    private confirmTimer;
    private retryTimer;
    private attempt;
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
    /** Ends the session (a client close: it is not resumed) and stops
     * reconnecting. Queued sends reject with `Closed`. */
    close(): void;
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
