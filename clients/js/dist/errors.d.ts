import type { ErrorCode } from "./protocol.js";
/** Every error this package throws or rejects with. */
export declare class SwitchboardError extends Error {
    /** The node's error code, or one of this client's own
     * (`queue_full`, `connection_lost`, `closed`). */
    readonly code: ErrorCode | "queue_full" | "connection_lost" | "closed";
    /** v3, `rejected`: the application's reason (its hook's `error`). */
    readonly reason?: string;
    constructor(code: SwitchboardError["code"], message: string, reason?: string);
}
/** `rate_limited`: over the session's rate; this send was dropped. */
export declare class RateLimited extends SwitchboardError {
}
/** `not_member`: only members may send to a group. */
export declare class NotMember extends SwitchboardError {
}
/** `too_large`: the frame is over the node's limit. */
export declare class TooLarge extends SwitchboardError {
}
/** `unavailable`: a backend the node needs is down; nothing was sent. */
export declare class Unavailable extends SwitchboardError {
}
/** `invalid_recipient`: not a valid client or group id. */
export declare class InvalidRecipient extends SwitchboardError {
}
/** `bad_frame` or `unknown_type`: the node could not read the frame. */
export declare class BadFrame extends SwitchboardError {
}
/** `internal`: the node failed; nothing was sent. */
export declare class Internal extends SwitchboardError {
}
/** `too_many_watched` (v3): the watch would pass the node's
 * `--max-watched`; nothing of it was watched. */
export declare class TooManyWatched extends SwitchboardError {
}
/** `rejected` (v3): the application's backend refused the message;
 * `reason` says why (`moderated`, …). Nothing was routed or stored. */
export declare class Rejected extends SwitchboardError {
}
/** `not_allowed` (v3): not a member of the group whose history was asked
 * for. */
export declare class NotAllowed extends SwitchboardError {
}
/** `no_history` (v3): the node keeps no history. */
export declare class NoHistory extends SwitchboardError {
}
/** Too many sends queued while disconnected (`maxQueued`): not sent. */
export declare class QueueFull extends SwitchboardError {
}
/** The connection dropped after the send went out and before its ack:
 * the node may or may not have routed it. */
export declare class ConnectionLost extends SwitchboardError {
}
/** The client was closed (by `close()`, or replaced by a newer session
 * of its device): not sent. */
export declare class Closed extends SwitchboardError {
}
/** The typed error for an `error` frame. */
export declare function fromFrame(code: ErrorCode, message: string, reason?: string): SwitchboardError;
