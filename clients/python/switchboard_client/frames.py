"""The frames a node sends, as typed, read-only values.

The wire contract is version 3 (``docs/protocol.md`` at the repository's
root). Frames arrive as JSON objects; each class here reads one kind with
``parse`` and keeps exactly the fields the contract names. Two renames,
because ``from`` and ``with`` are Python keywords: a message's ``from``
is :attr:`Message.sender`, and a conversation's ``with`` (the other
client) is ``peer``.

Parsing is strict about what the client relies on (a ``message`` without
``msg_id`` is a broken node, and raises :class:`FrameError`) and lenient
about the rest: fields a later version adds are ignored.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, Mapping

if TYPE_CHECKING:  # typing.Self is Python 3.11's; no runtime dependency
    from typing_extensions import Self

#: A JSON value as ``json.loads`` returns it: message and signal bodies.
Json = Any

AckStatus = Literal["local", "remote", "offline", "fanout"]
OfflineReason = Literal[
    "never_seen",
    "disconnected",
    "node_dead",
    "slow_consumer",
    "resume_expired",
    "shutting_down",
]


class FrameError(ValueError):
    """A frame from the node lacks a field the contract promises."""


def _str(frame: Mapping[str, Any], key: str) -> str:
    value = frame.get(key)
    if not isinstance(value, str):
        raise FrameError(f"{frame.get('type')!r} frame without a string {key!r}: {dict(frame)}")
    return value


def _int(frame: Mapping[str, Any], key: str) -> int:
    value = frame.get(key)
    if not isinstance(value, int) or isinstance(value, bool):
        raise FrameError(f"{frame.get('type')!r} frame without an integer {key!r}: {dict(frame)}")
    return value


def _opt_str(frame: Mapping[str, Any], key: str) -> str | None:
    value = frame.get(key)
    return value if isinstance(value, str) else None


def _opt_int(frame: Mapping[str, Any], key: str) -> int | None:
    value = frame.get(key)
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _strs(frame: Mapping[str, Any], key: str) -> tuple[str, ...]:
    value = frame.get(key)
    if value is None:
        return ()
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise FrameError(f"{frame.get('type')!r} frame whose {key!r} is not a list of strings")
    return tuple(value)


@dataclass(frozen=True)
class Welcome:
    """The first frame of a session."""

    client_id: str
    #: This session's device (``default`` when none was named).
    device: str
    session_id: str
    node: str
    #: Acks mode: takes this session back after a drop.
    resume_token: str | None = None
    #: Set when the client asked to resume: whether it did.
    resumed: bool | None = None
    #: With an inbox on the node: how many stored messages follow.
    inbox: int | None = None

    @classmethod
    def parse(cls, f: Mapping[str, Any]) -> Welcome:
        resumed = f.get("resumed")
        return cls(
            client_id=_str(f, "client_id"),
            device=_str(f, "device"),
            session_id=_str(f, "session_id"),
            node=_str(f, "node"),
            resume_token=_opt_str(f, "resume_token"),
            resumed=resumed if isinstance(resumed, bool) else None,
            inbox=_opt_int(f, "inbox"),
        )


@dataclass(frozen=True)
class Ack:
    """The node's answer to a send: exactly one per send, in order."""

    msg_id: str
    #: The branch the node took (``fanout`` for a group send).
    status: AckStatus
    #: Sessions reached (sends to a client).
    sessions: int | None = None
    #: Group sends: sessions handed here, published elsewhere, members with
    #: no session, hops published.
    local: int | None = None
    remote: int | None = None
    offline: int | None = None
    nodes: int | None = None
    #: Offline sends: why, and when the recipient was last seen (ms).
    reason: OfflineReason | None = None
    last_seen: int | None = None
    #: Sends with ``store=True``, on a node with an inbox.
    stored: bool | None = None
    store_error: str | None = None
    #: v3, with history: the message's number in its conversation.
    cseq: int | None = None
    #: v3: why it was not kept in history (``unavailable``).
    history_error: str | None = None

    @classmethod
    def parse(cls, f: Mapping[str, Any], **extra: Any) -> Self:
        """The ack in ``f``; ``extra`` fields for a subclass."""
        status = _str(f, "status")
        if status not in ("local", "remote", "offline", "fanout"):
            raise FrameError(f"ack with an unknown status {status!r}")
        stored = f.get("stored")
        return cls(
            msg_id=_str(f, "msg_id"),
            status=status,  # type: ignore[arg-type]  # checked just above
            sessions=_opt_int(f, "sessions"),
            local=_opt_int(f, "local"),
            remote=_opt_int(f, "remote"),
            offline=_opt_int(f, "offline"),
            nodes=_opt_int(f, "nodes"),
            reason=_opt_str(f, "reason"),  # type: ignore[arg-type]  # the node's word
            last_seen=_opt_int(f, "last_seen"),
            stored=stored if isinstance(stored, bool) else None,
            store_error=_opt_str(f, "store_error"),
            cseq=_opt_int(f, "cseq"),
            history_error=_opt_str(f, "history_error"),
            **extra,
        )


@dataclass(frozen=True)
class Message:
    """A message for this client (or, in a history page, a kept one)."""

    msg_id: str
    #: Who sent it (the wire's ``from``).
    sender: str
    body: Json
    #: ms since the Unix epoch, stamped by the sender's node.
    ts: int
    #: Present for a message to a client.
    to: str | None = None
    #: Present for a message to a group.
    group: str | None = None
    #: A copy of what this client sent from another device.
    carbon: bool = False
    #: Acks mode: this session's sequence number (the client confirms it).
    seq: int | None = None
    #: It waited in this client's inbox.
    stored: bool = False
    #: v3, with history: its number in its conversation.
    cseq: int | None = None

    @classmethod
    def parse(cls, f: Mapping[str, Any]) -> Message:
        return cls(
            msg_id=_str(f, "msg_id"),
            sender=_str(f, "from"),
            body=f.get("body"),
            ts=_int(f, "ts"),
            to=_opt_str(f, "to"),
            group=_opt_str(f, "group"),
            carbon=f.get("carbon") is True,
            seq=_opt_int(f, "seq"),
            stored=f.get("stored") is True,
            cseq=_opt_int(f, "cseq"),
        )


@dataclass(frozen=True)
class Receipt:
    """A later outcome of a routed message, at one recipient session."""

    msg_id: str
    status: Literal["delivered", "offline"]
    to: str | None = None
    device: str | None = None
    reason: OfflineReason | None = None

    @classmethod
    def parse(cls, f: Mapping[str, Any]) -> Receipt:
        status = _str(f, "status")
        if status not in ("delivered", "offline"):
            raise FrameError(f"receipt with an unknown status {status!r}")
        return cls(
            msg_id=_str(f, "msg_id"),
            status=status,  # type: ignore[arg-type]  # checked just above
            to=_opt_str(f, "to"),
            device=_opt_str(f, "device"),
            reason=_opt_str(f, "reason"),  # type: ignore[arg-type]  # the node's word
        )


@dataclass(frozen=True)
class Presence:
    """v3: a watched client's state: at once after a watch, then on every
    change (coalesced by the node; the last one is always current)."""

    client_id: str
    state: Literal["online", "offline"]
    #: Its devices online, sorted; empty when offline.
    devices: tuple[str, ...]
    #: When the node observed the change (ms since the Unix epoch).
    ts: int
    #: Offline: when it was last seen (ms), when known.
    last_seen: int | None = None

    @classmethod
    def parse(cls, f: Mapping[str, Any]) -> Presence:
        state = _str(f, "state")
        if state not in ("online", "offline"):
            raise FrameError(f"presence with an unknown state {state!r}")
        return cls(
            client_id=_str(f, "client_id"),
            state=state,  # type: ignore[arg-type]  # checked just above
            devices=_strs(f, "devices"),
            ts=_int(f, "ts"),
            last_seen=_opt_int(f, "last_seen"),
        )


@dataclass(frozen=True)
class Signal:
    """v3: an ephemeral note from another client ("typing…"): never acked,
    stored or repeated."""

    sender: str
    body: Json
    #: Present for a signal to this client.
    to: str | None = None
    #: Present for a signal to a group.
    group: str | None = None

    @classmethod
    def parse(cls, f: Mapping[str, Any]) -> Signal:
        return cls(sender=_str(f, "from"), body=f.get("body"), to=_opt_str(f, "to"), group=_opt_str(f, "group"))


@dataclass(frozen=True)
class Read:
    """v3: a read cursor moved: this client's on another device, or (in a
    two-client conversation) the other client's."""

    by: str
    upto: int
    #: The conversation: the other client (the wire's ``with``) ...
    peer: str | None = None
    #: ... or a group.
    group: str | None = None

    @classmethod
    def parse(cls, f: Mapping[str, Any]) -> Read:
        return cls(by=_str(f, "by"), upto=_int(f, "upto"), peer=_opt_str(f, "with"), group=_opt_str(f, "group"))


@dataclass(frozen=True)
class Watching:
    """The answer to :meth:`Client.watch`: the clients watched now, and
    those this client may not watch (nothing is revealed about them)."""

    clients: tuple[str, ...]
    denied: tuple[str, ...]


@dataclass(frozen=True)
class History:
    """v3: a page of a conversation: messages oldest first."""

    messages: tuple[Message, ...]
    #: More lie beyond, in the page's direction.
    more: bool
    peer: str | None = None
    group: str | None = None

    @classmethod
    def parse(cls, f: Mapping[str, Any]) -> History:
        raw = f.get("messages")
        if not isinstance(raw, list):
            raise FrameError("history frame without a list of messages")
        return cls(
            messages=tuple(Message.parse(m) for m in raw),
            more=f.get("more") is True,
            peer=_opt_str(f, "with"),
            group=_opt_str(f, "group"),
        )


@dataclass(frozen=True)
class Conversation:
    """v3: one of this client's conversations."""

    #: Its newest kept message.
    last: Message
    #: Its last ``cseq``.
    cseq: int
    #: This client's read cursor.
    read: int
    #: Messages after ``read`` (by others), still kept.
    unread: int
    peer: str | None = None
    group: str | None = None
    #: Two-client conversations: the other client's cursor.
    peer_read: int | None = None

    @classmethod
    def parse(cls, f: Mapping[str, Any]) -> Conversation:
        last = f.get("last")
        if not isinstance(last, dict):
            raise FrameError("conversation without its last message")
        return cls(
            last=Message.parse(last),
            cseq=_int(f, "cseq"),
            read=_int(f, "read"),
            unread=_int(f, "unread"),
            peer=_opt_str(f, "with"),
            group=_opt_str(f, "group"),
            peer_read=_opt_int(f, "peer_read"),
        )


@dataclass(frozen=True)
class Conversations:
    """v3: a page of this client's conversations, most recent first."""

    items: tuple[Conversation, ...]
    more: bool

    @classmethod
    def parse(cls, f: Mapping[str, Any]) -> Conversations:
        raw = f.get("items")
        if not isinstance(raw, list):
            raise FrameError("conversations frame without a list of items")
        return cls(items=tuple(Conversation.parse(c) for c in raw), more=f.get("more") is True)


class CloseCode:
    """Close codes a node uses."""

    NORMAL = 1000
    #: The node is shutting down: reconnect (elsewhere), after its hint.
    GOING_AWAY = 1001
    #: Policy (for example, sustained abuse of rate limits).
    POLICY = 1008
    TOO_BIG = 1009
    #: Replaced by a newer session of this device: not reconnected.
    REPLACED = 4001
    #: Slow consumer: its outbound queue stayed full.
    SLOW_CONSUMER = 4008
