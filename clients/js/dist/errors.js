/** Every error this package throws or rejects with. */
export class SwitchboardError extends Error {
    constructor(code, message, reason) {
        super(message);
        this.name = new.target.name;
        this.code = code;
        if (reason !== undefined)
            this.reason = reason;
    }
}
/** `rate_limited`: over the session's rate; this send was dropped. */
export class RateLimited extends SwitchboardError {
}
/** `not_member`: only members may send to a group. */
export class NotMember extends SwitchboardError {
}
/** `too_large`: the frame is over the node's limit. */
export class TooLarge extends SwitchboardError {
}
/** `unavailable`: a backend the node needs is down; nothing was sent. */
export class Unavailable extends SwitchboardError {
}
/** `invalid_recipient`: not a valid client or group id. */
export class InvalidRecipient extends SwitchboardError {
}
/** `bad_frame` or `unknown_type`: the node could not read the frame. */
export class BadFrame extends SwitchboardError {
}
/** `internal`: the node failed; nothing was sent. */
export class Internal extends SwitchboardError {
}
/** `too_many_watched` (v3): the watch would pass the node's
 * `--max-watched`; nothing of it was watched. */
export class TooManyWatched extends SwitchboardError {
}
/** `rejected` (v3): the application's backend refused the message;
 * `reason` says why (`moderated`, …). Nothing was routed or stored. */
export class Rejected extends SwitchboardError {
}
/** `not_allowed` (v3): not a member of the group whose history was asked
 * for. */
export class NotAllowed extends SwitchboardError {
}
/** `no_history` (v3): the node keeps no history. */
export class NoHistory extends SwitchboardError {
}
/** Too many sends queued while disconnected (`maxQueued`): not sent. */
export class QueueFull extends SwitchboardError {
}
/** The connection dropped after the send went out and before its ack:
 * the node may or may not have routed it. */
export class ConnectionLost extends SwitchboardError {
}
/** The client was closed (by `close()`, or replaced by a newer session
 * of its device): not sent. */
export class Closed extends SwitchboardError {
}
/** The typed error for an `error` frame. */
export function fromFrame(code, message, reason) {
    switch (code) {
        case "rejected":
            return new Rejected(code, message, reason);
        case "rate_limited":
            return new RateLimited(code, message);
        case "not_member":
            return new NotMember(code, message);
        case "too_large":
            return new TooLarge(code, message);
        case "unavailable":
            return new Unavailable(code, message);
        case "invalid_recipient":
            return new InvalidRecipient(code, message);
        case "internal":
            return new Internal(code, message);
        case "too_many_watched":
            return new TooManyWatched(code, message);
        case "not_allowed":
            return new NotAllowed(code, message);
        case "no_history":
            return new NoHistory(code, message);
        default:
            return new BadFrame(code, message);
    }
}
