/**
 * switchboard-client: the official client for Switchboard, for browsers
 * and Node. See README.md for a first example and API.md for the API.
 */
export { Client, connect } from "./client.js";
export type { ClientEvents, ConnectOptions, Outcome, SendOptions, Sent, State, Watching, WebSocketConstructor, WebSocketLike, } from "./client.js";
export { BadFrame, Closed, ConnectionLost, Internal, InvalidRecipient, NoHistory, NotAllowed, NotMember, QueueFull, RateLimited, Rejected, SwitchboardError, TooLarge, TooManyWatched, Unavailable, } from "./errors.js";
export { CloseCode } from "./protocol.js";
export type * from "./protocol.js";
