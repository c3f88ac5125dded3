/**
 * The frames of the Switchboard wire contract, version 3
 * (docs/protocol.md), as TypeScript types: what a client sends and what a
 * node answers.
 */
/** Close codes a node uses. */
export const CloseCode = {
    Normal: 1000,
    GoingAway: 1001,
    Policy: 1008,
    TooBig: 1009,
    Replaced: 4001,
    SlowConsumer: 4008,
};
