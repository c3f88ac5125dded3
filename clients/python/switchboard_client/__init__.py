"""The asyncio client of the Switchboard instant-messaging broker.

    import asyncio
    import switchboard_client as sb

    async def main() -> None:
        async with sb.connect("ws://127.0.0.1:8080", client_id="alice") as alice:
            sent = await alice.send("bob", {"text": "hi"}, receipt=True)
            print(sent.status)

    asyncio.run(main())

The wire contract is version 3 (``docs/protocol.md`` in the repository).
"""

from .client import Client, Disconnect, Outcome, Retry, Sent, State, TokenSource, connect
from .errors import (
    BadFrame,
    Closed,
    ConnectionLost,
    Internal,
    InvalidRecipient,
    NoHistory,
    NotAllowed,
    NotMember,
    QueueFull,
    RateLimited,
    Refused,
    Rejected,
    SwitchboardError,
    TooLarge,
    TooManyWatched,
    Unavailable,
)
from .frames import (
    Ack,
    AckStatus,
    CloseCode,
    Conversation,
    Conversations,
    FrameError,
    History,
    Json,
    Message,
    OfflineReason,
    Presence,
    Read,
    Receipt,
    Signal,
    Watching,
    Welcome,
)

__version__ = "0.3.0"

__all__ = [
    "Ack",
    "AckStatus",
    "BadFrame",
    "Client",
    "CloseCode",
    "Closed",
    "ConnectionLost",
    "Conversation",
    "Conversations",
    "Disconnect",
    "FrameError",
    "History",
    "Internal",
    "InvalidRecipient",
    "Json",
    "Message",
    "NoHistory",
    "NotAllowed",
    "NotMember",
    "OfflineReason",
    "Outcome",
    "Presence",
    "QueueFull",
    "RateLimited",
    "Read",
    "Receipt",
    "Refused",
    "Rejected",
    "Retry",
    "Sent",
    "Signal",
    "State",
    "SwitchboardError",
    "TokenSource",
    "TooLarge",
    "TooManyWatched",
    "Unavailable",
    "Watching",
    "Welcome",
    "connect",
]
