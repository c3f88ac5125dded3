/**
 * The frames of the Switchboard wire contract, version 3
 * (docs/protocol.md), as TypeScript types: what a client sends and what a
 * node answers.
 */
/** The branch the sender's node took; `fanout` for a send to a group. */
export type AckStatus = "local" | "remote" | "offline" | "fanout";
/** Why a message is offline. */
export type OfflineReason = "never_seen" | "disconnected" | "node_dead" | "slow_consumer" | "resume_expired" | "shutting_down";
/** The `code` of an `error` frame. */
export type ErrorCode = "bad_frame" | "unknown_type" | "invalid_recipient" | "too_large" | "rate_limited" | "unavailable" | "internal" | "not_member" | "too_many_watched" | "not_allowed" | "no_history" | "rejected";
/** `store_error` of an ack whose message could not be stored. */
export type StoreError = "inbox_full" | "unavailable";
/** The first frame of a session. */
export interface WelcomeFrame {
    type: "welcome";
    client_id: string;
    /** This session's device (`default` when none was named). */
    device: string;
    session_id: string;
    node: string;
    /** Acks mode: takes this session back after a drop. */
    resume_token?: string;
    /** Set when the client asked to resume: whether it did. */
    resumed?: boolean;
    /** With an inbox on the node: how many stored messages follow. */
    inbox?: number;
}
/** The node's answer to a `send`: exactly one per send, in order. */
export interface AckFrame {
    type: "ack";
    id?: string;
    msg_id: string;
    status: AckStatus;
    /** Sessions reached (sends to a client). */
    sessions?: number;
    /** Group sends: sessions handed here, published elsewhere, members
     * with no session, hops published. */
    local?: number;
    remote?: number;
    offline?: number;
    nodes?: number;
    /** Offline sends: why, and when the recipient was last seen (ms). */
    reason?: OfflineReason;
    last_seen?: number;
    /** Sends with `store`, on a node with an inbox. */
    stored?: boolean;
    store_error?: StoreError;
    /** v3, with history: the message's number in its conversation. */
    cseq?: number;
    /** v3: why it was not kept in history (`unavailable`). */
    history_error?: string;
}
/** A message for this client. */
export interface MessageFrame<B = unknown> {
    type: "message";
    msg_id: string;
    from: string;
    /** Present for a message to a client. */
    to?: string;
    /** Present for a message to a group. */
    group?: string;
    body: B;
    /** ms since the Unix epoch, stamped by the sender's node. */
    ts: number;
    /** A copy of what this client sent from another device. */
    carbon?: boolean;
    /** Acks mode: this session's sequence number, to confirm. */
    seq?: number;
    /** It waited in this client's inbox. */
    stored?: boolean;
    /** v3, with history: its number in its conversation. */
    cseq?: number;
}
/** A later outcome of a routed message, at one recipient session. */
export interface ReceiptFrame {
    type: "receipt";
    id?: string;
    msg_id: string;
    status: "delivered" | "offline";
    to?: string;
    device?: string;
    reason?: OfflineReason;
}
export interface ErrorFrame {
    type: "error";
    code: ErrorCode;
    message: string;
    id?: string;
    /** v3, `rejected`: the application's reason. */
    reason?: string;
}
export interface PongFrame {
    type: "pong";
    id?: string;
}
/** v3: the answer to a `watch`: the clients watched now, and those this
 * client may not watch (nothing is revealed about them). */
export interface WatchingFrame {
    type: "watching";
    id?: string;
    clients: string[];
    denied: string[];
}
/** v3: the answer to an `unwatch` or a `visibility`. */
export interface OkFrame {
    type: "ok";
    id?: string;
}
/** v3: a watched client's state: at once after a `watch`, then on every
 * change (coalesced: at most one per second per client by default; the
 * last one always current). */
export interface PresenceFrame {
    type: "presence";
    client_id: string;
    state: "online" | "offline";
    /** Its devices online, sorted; empty when offline. */
    devices: string[];
    /** Offline: when it was last seen (ms), when known. An invisible client
     * shows the moment it went invisible. */
    last_seen?: number;
    /** When the node observed the change (ms since the Unix epoch). */
    ts: number;
}
/** v3: an ephemeral note from another client ("typing…"): never acked,
 * stored or repeated. */
export interface SignalFrame<B = unknown> {
    type: "signal";
    from: string;
    /** Present for a signal to this client. */
    to?: string;
    /** Present for a signal to a group. */
    group?: string;
    body: B;
}
/** v3: a conversation, from this client's side: the other client, or a
 * group. */
export type Thread = {
    with: string;
} | {
    group: string;
};
/** v3: a page of a conversation: message frames, oldest first. */
export interface HistoryFrame {
    type: "history";
    id?: string;
    with?: string;
    group?: string;
    messages: MessageFrame[];
    /** More lie beyond, in the page's direction. */
    more: boolean;
}
/** v3: one of this client's conversations. */
export interface ConversationItem {
    with?: string;
    group?: string;
    /** Its newest kept message. */
    last: MessageFrame;
    /** Its last `cseq`. */
    cseq: number;
    /** This client's read cursor. */
    read: number;
    /** Messages after `read` (by others), still kept. */
    unread: number;
    /** Two-client conversations: the other client's cursor. */
    peer_read?: number;
}
export interface ConversationsFrame {
    type: "conversations";
    id?: string;
    items: ConversationItem[];
    more: boolean;
}
/** v3: a read cursor moved: this client's on another device, or (two
 * clients) the other client's. */
export interface ReadFrame {
    type: "read";
    by: string;
    with?: string;
    group?: string;
    upto: number;
}
/** Anything a node sends. */
export type ServerFrame = WelcomeFrame | AckFrame | MessageFrame | ReceiptFrame | ErrorFrame | PongFrame | WatchingFrame | OkFrame | PresenceFrame | SignalFrame | HistoryFrame | ConversationsFrame | ReadFrame;
/** A send to a client (`to`) or a group (`group`). */
export interface SendFrame {
    type: "send";
    to?: string;
    group?: string;
    body: unknown;
    id?: string;
    receipt?: boolean;
    store?: boolean;
    /** v3: `false` keeps it out of its conversation's history. */
    history?: boolean;
}
export interface PingFrame {
    type: "ping";
    id?: string;
}
/** Acks mode: every message up to `seq` `upto` has arrived. */
export interface ReceivedFrame {
    type: "received";
    upto: number;
}
/** v3: watch these clients' presence (at most 256 per frame). */
export interface WatchFrame {
    type: "watch" | "unwatch";
    clients: string[];
    id?: string;
}
/** v3: invisible (`false`): watchers see this client offline. */
export interface VisibilityFrame {
    type: "visibility";
    visible: boolean;
    id?: string;
}
/** v3: an ephemeral note to a client (`to`) or a group (`group`); its
 * body is at most 1 KiB of JSON. */
export interface SignalRequestFrame {
    type: "signal";
    to?: string;
    group?: string;
    body: unknown;
    id?: string;
}
/** v3: a page of a conversation (`before` or `after` a cseq, or the
 * newest), at most 200. */
export type HistoryRequestFrame = {
    type: "history";
    id?: string;
    before?: number;
    after?: number;
    limit?: number;
} & Thread;
/** v3: this client's conversations, most recent first. */
export interface ConversationsRequestFrame {
    type: "conversations";
    id?: string;
    before?: number;
    limit?: number;
}
/** v3: this client has read a conversation up to `upto`. */
export type ReadRequestFrame = {
    type: "read";
    id?: string;
    upto: number;
} & Thread;
/** Anything a client sends. */
export type ClientFrame = SendFrame | PingFrame | ReceivedFrame | WatchFrame | VisibilityFrame | SignalRequestFrame | HistoryRequestFrame | ConversationsRequestFrame | ReadRequestFrame;
/** Close codes a node uses. */
export declare const CloseCode: {
    readonly Normal: 1000;
    readonly GoingAway: 1001;
    readonly Policy: 1008;
    readonly TooBig: 1009;
    readonly Replaced: 4001;
    readonly SlowConsumer: 4008;
};
