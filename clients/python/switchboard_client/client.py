"""The client: one WebSocket session with a Switchboard node, kept up.

How it works, in the order things happen:

- :meth:`Client.start` (or entering ``async with``) starts one task, the
  *connection loop*: it opens the socket, reads every frame the node sends,
  and when the socket ends it waits (exponential backoff with full jitter,
  a draining node's hint, a busy node's ``Retry-After``) and opens another.
  In acks mode the next socket asks to resume the session, so nothing sent
  to this client in between is lost.
- Requests (sends, pings, watches, history pages) each get an ``id`` and a
  future; the node answers every request in the order it read them, so an
  error frame without an ``id`` answers the oldest request still waiting.
- Messages go into a bounded buffer that ``async for message in client``
  reads. When the application does not keep up, the buffer fills and the
  loop stops reading the socket: the node then sees a slow consumer, never
  a client that silently drops. Except while a request waits for its
  answer: the answer comes behind whatever the node sent first, so the
  loop reads on (the node's ``--session-queue`` bounds what it sent), or an
  application that sends from its message loop would wait forever.
- In acks mode a message is confirmed (``received``) once the iteration
  has handed it to the application, lazily (every ``confirm_every``
  messages, or ``confirm_after`` seconds after the first unconfirmed one).
  A process that dies with messages still in its buffer has not confirmed
  them: their senders hear ``offline`` when the session's resume window
  ends, instead of a ``delivered`` nobody read.
"""

from __future__ import annotations

import asyncio
import json
import random
import re
import time
from collections import deque
from dataclasses import dataclass
from typing import Any, AsyncIterator, Awaitable, Callable, Coroutine, Literal, Mapping, Union
from urllib.parse import urlencode

from websockets.asyncio.client import ClientConnection
from websockets.asyncio.client import connect as ws_connect
from websockets.exceptions import ConnectionClosed, InvalidStatus, WebSocketException

from .errors import (
    Closed,
    ConnectionLost,
    QueueFull,
    Refused,
    SwitchboardError,
    from_frame,
)
from .events import Listeners, log
from .frames import (
    Ack,
    CloseCode,
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

#: Where the client is in its life.
State = Literal["connecting", "open", "reconnecting", "closed"]

#: A token, or a function (plain or async) that fetches a fresh one.
TokenSource = Callable[[], Union[str, Awaitable[str]]]

#: At most this many ids in one ``watch`` frame (the protocol's limit).
WATCH_CHUNK = 256

#: The close reason of a draining node names when to come back (v3).
_RECONNECT_HINT = re.compile(r"reconnect_after_ms=(\d+)")

#: The largest frame the client reads. A history page is at most 200
#: messages of at most the node's frame limit (64 KiB by default): 13 MiB.
MAX_FRAME_BYTES = 32 * 1024 * 1024


@dataclass(frozen=True)
class Outcome:
    """What finally became of a send: ``delivered`` (a session of the
    recipient got it; in acks mode, confirmed it), ``offline`` (none did:
    ``reason`` says why), ``stored`` (offline, and kept in the recipient's
    inbox), or ``unknown`` (this client's session ended and was not resumed
    before every receipt came)."""

    status: Literal["delivered", "offline", "stored", "unknown"]
    receipts: tuple[Receipt, ...] = ()
    reason: OfflineReason | None = None


@dataclass(frozen=True)
class Sent(Ack):
    """The ack of a send, and (for a send with ``receipt=True`` that reached
    a session, or an ``offline`` one) the future of its outcome."""

    outcome: asyncio.Future[Outcome] | None = None


@dataclass(frozen=True)
class Disconnect:
    """The connection ended (a reconnect may follow)."""

    code: int
    reason: str


@dataclass(frozen=True)
class Retry:
    """The next connect is due in ``delay`` seconds (attempts count from 1)."""

    attempt: int
    delay: float


class _Request:
    """A request written (or queued) and waiting for its answer."""

    __slots__ = ("id", "frame", "future", "receipt")

    def __init__(self, id: str, frame: str, receipt: bool) -> None:
        self.id = id
        self.frame = frame
        self.receipt = receipt
        self.future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()


class _Tracked:
    """The receipts of one send, until every session reached has answered."""

    __slots__ = ("expected", "receipts", "future")

    def __init__(self, expected: int, future: asyncio.Future[Outcome]) -> None:
        self.expected = expected
        self.receipts: list[Receipt] = []
        self.future = future


def _settle(future: asyncio.Future[Any], value: Any = None, error: BaseException | None = None) -> None:
    """Settles ``future`` unless it already is (its caller may have been
    cancelled, or given up)."""
    if future.done():
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(value)


def _thread(peer: str | None, group: str | None) -> dict[str, str]:
    """A conversation on the wire: ``{"with": peer}`` or ``{"group": group}``."""
    if (peer is None) == (group is None):
        raise ValueError("name exactly one of peer (a client) or group")
    return {"with": peer} if peer is not None else {"group": group}  # type: ignore[dict-item]


def _dumps(frame: Mapping[str, Any]) -> str:
    return json.dumps(frame, separators=(",", ":"), ensure_ascii=False)


class Client:
    """A session with a Switchboard node, reconnected (and, in acks mode,
    resumed) until :meth:`close`. Made by :data:`connect`.

    ``url`` is the node, ``ws://host:port`` or ``wss://…`` (``/ws`` is
    added). Options, keyword-only: ``client_id`` (authentication off),
    ``token``, or ``get_token`` (called before every connect, plain or
    async: tokens expire); ``device`` (one session per device); ``acks``
    (default True: confirmed delivery and resume); ``reconnect`` (default
    True), ``initial_delay`` and ``max_delay`` (seconds, 0.5 and 30:
    exponential backoff with full jitter); ``max_queued`` (sends waiting for
    a connection, 256); ``max_buffered`` (messages read but not yet
    iterated, 256); ``confirm_every`` and ``confirm_after`` (32 messages,
    0.2 s); ``open_timeout`` (seconds per connect attempt, 10).

    All methods are for one event loop: the one the client was started on.
    """

    def __init__(
        self,
        url: str,
        *,
        client_id: str | None = None,
        token: str | None = None,
        get_token: TokenSource | None = None,
        device: str | None = None,
        acks: bool = True,
        reconnect: bool = True,
        initial_delay: float = 0.5,
        max_delay: float = 30.0,
        max_queued: int = 256,
        max_buffered: int = 256,
        confirm_every: int = 32,
        confirm_after: float = 0.2,
        open_timeout: float = 10.0,
    ) -> None:
        if client_id is None and token is None and get_token is None:
            raise ValueError("connect: give client_id (authentication off), token or get_token")
        if not url.startswith(("ws://", "wss://")):
            raise ValueError(f"connect: the url must be ws://host:port or wss://…, not {url!r}")
        if max_queued < 0 or max_buffered < 1 or confirm_every < 1:
            raise ValueError("max_queued must be >= 0, max_buffered and confirm_every >= 1")
        self._url = url
        self._client_id = client_id
        self._token = token
        self._get_token = get_token
        self._device = device
        self._acks = acks
        self._reconnect = reconnect
        self._initial_delay = initial_delay
        self._max_delay = max_delay
        self._max_queued = max_queued
        self._confirm_every = confirm_every
        self._confirm_after = confirm_after
        self._open_timeout = open_timeout

        self._state: State = "connecting"
        self._welcome: Welcome | None = None
        self._ws: ClientConnection | None = None
        self._task: asyncio.Task[None] | None = None
        self._wanted = True
        self._fatal: SwitchboardError | None = None
        self._closed_with: Disconnect | None = None
        self._ready: asyncio.Future[Welcome] | None = None
        # Serialises writes, so frames go out in the order requests were
        # registered (asyncio locks are FIFO).
        self._write_lock = asyncio.Lock()

        # Requests: written and waiting by id; their ids in writing order;
        # sends queued while disconnected.
        self._next_id = 1
        self._waiting: dict[str, _Request] = {}
        self._order: deque[str] = deque()
        self._queued: deque[_Request] = deque()
        self._tracked: dict[str, _Tracked] = {}

        # Incoming messages, for the application's iteration. Each with the
        # session epoch it came in: a seq only means something to its own
        # session.
        # Bounded by `_max_buffered` by the loop itself, not by the queue: see
        # `_make_room`.
        self._inbox: asyncio.Queue[tuple[int, Message] | None] = asyncio.Queue()
        self._max_buffered = max_buffered
        self._room = asyncio.Event()
        self._epoch = 0
        # Tasks started in the background (confirmations, re-watching):
        # referenced until done, as asyncio keeps only weak references.
        self._background: set[asyncio.Task[None]] = set()

        # Acks mode: the resume token; the last seq received (for resume and
        # to drop a repeat) and handed to the application (to confirm).
        self._resume_token: str | None = None
        self._received_seq = 0
        self._handed_seq = 0
        self._confirmed_seq = 0
        self._confirm_timer: asyncio.TimerHandle | None = None

        # Reconnecting: attempts since the last session, a busy node's
        # not-before (monotonic seconds), a draining node's hint (seconds).
        self._attempt = 0
        self._not_before = 0.0
        self._hint: float | None = None

        # v3 presence: what the application watches (kept across sessions),
        # what the node denied, what changed while disconnected, and the
        # last presence of each watched client.
        self._watched: set[str] = set()
        self._denied: set[str] = set()
        self._unsent_watch: set[str] = set()
        self._unsent_unwatch: set[str] = set()
        self._presence: dict[str, Presence] = {}
        self._rewatched: asyncio.Task[None] | None = None

        self._on_state: Listeners[State] = Listeners("state")
        self._on_welcome: Listeners[Welcome] = Listeners("welcome")
        self._on_receipt: Listeners[Receipt] = Listeners("receipt")
        self._on_presence: Listeners[Presence] = Listeners("presence")
        self._on_signal: Listeners[Signal] = Listeners("signal")
        self._on_read: Listeners[Read] = Listeners("read")
        self._on_error: Listeners[SwitchboardError] = Listeners("error")
        self._on_disconnect: Listeners[Disconnect] = Listeners("disconnect")
        self._on_retry: Listeners[Retry] = Listeners("retry")

    # ---- Life --------------------------------------------------------------

    @property
    def state(self) -> State:
        """``connecting``, ``open``, ``reconnecting`` or ``closed``."""
        return self._state

    @property
    def welcome(self) -> Welcome | None:
        """The current (or last) session's welcome."""
        return self._welcome

    def start(self) -> None:
        """Starts connecting, in the background (``async with`` does this).
        Starting a started client does nothing."""
        if self._task is None and self._wanted:
            self._task = asyncio.get_running_loop().create_task(self._run(), name="switchboard-client")

    async def ready(self) -> Welcome:
        """The welcome of the open session, once there is one. Raises
        :class:`Closed` if the client closes first, :class:`Refused` if the
        node refused it."""
        if self._state == "open" and self._welcome is not None:
            return self._welcome
        if self._state == "closed":
            raise self._fatal or Closed("closed", "the client is closed")
        if self._ready is None or self._ready.done():
            self._ready = asyncio.get_running_loop().create_future()
        return await asyncio.shield(self._ready)

    async def __aenter__(self) -> Client:
        self.start()
        try:
            await self.ready()
        except BaseException:
            await self.close()
            raise
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.close()

    async def close(self) -> Disconnect | None:
        """Ends the session (a client close: it is not resumed) and stops
        reconnecting. Queued sends raise :class:`Closed`; sends waiting for
        their ack raise :class:`ConnectionLost`. Returns the close code and
        reason the socket reported (``None`` when it was not connected).
        Iterating messages ends once the buffer is read."""
        if not self._wanted and self._state == "closed":
            return self._closed_with
        self._wanted = False
        ws = self._ws
        if ws is not None:
            await self._confirm_now()
        self._stop_confirm_timer()
        # A client close ends the session: acks-mode messages still buffered
        # are answered offline to their senders, and not handed out.
        self._epoch += 1
        task, self._task = self._task, None
        if task is not None and task is not asyncio.current_task():
            task.cancel()
            try:
                await task
            except (asyncio.CancelledError, Exception):
                pass
        self._ws = None
        report: Disconnect | None = None
        if ws is not None:
            try:
                await ws.close(CloseCode.NORMAL)
            except Exception:
                pass
            code = ws.close_code if ws.close_code is not None else CloseCode.NORMAL
            report = Disconnect(code, ws.close_reason or "")
        self._fail_waiting(ConnectionLost("connection_lost", "closed before the answer; a send may or may not have been routed"))
        self._finish(Closed("closed", "the client was closed"))
        self._closed_with = report
        return report

    # ---- Sending -----------------------------------------------------------

    async def send(
        self,
        to: str,
        body: Json,
        *,
        receipt: bool = False,
        store: bool = False,
        history: bool = True,
    ) -> Sent:
        """Sends ``body`` (any JSON value) to client ``to``; returns its ack.

        ``receipt=True`` asks for ``delivered`` receipts: ``Sent.outcome``
        then settles once every session reached has answered. ``store=True``
        keeps it in the recipient's inbox while it is offline (on a node
        with an inbox). ``history=False`` keeps it out of the conversation's
        history (v3). While disconnected the send waits (at most
        ``max_queued`` of them, or :class:`QueueFull`) and goes out with the
        next session."""
        frame: dict[str, Any] = {"type": "send", "to": to, "body": body}
        if receipt:
            frame["receipt"] = True
        if store:
            frame["store"] = True
        if not history:
            frame["history"] = False
        ack = await self._send(frame, receipt)
        return self._sent(ack, receipt)

    async def send_group(self, group: str, body: Json) -> Sent:
        """Sends ``body`` to every member of ``group``; the ack counts each
        branch (``local``, ``remote``, ``offline``, ``nodes``)."""
        ack = await self._send({"type": "send", "group": group, "body": body}, False)
        return self._sent(ack, False)

    async def ping(self) -> None:
        """A round trip to the node (:class:`ConnectionLost` when not
        connected)."""
        await self._call({"type": "ping"})

    async def _send(self, frame: dict[str, Any], receipt: bool) -> Mapping[str, Any]:
        if self._state == "closed":
            raise self._fatal or Closed("closed", "the client is closed")
        request = self._request(frame, receipt)
        if self._state == "open" and self._ws is not None:
            await self._transmit(request)
        elif len(self._queued) >= self._max_queued:
            raise QueueFull("queue_full", f"{self._max_queued} sends already wait for the connection")
        else:
            self._queued.append(request)
        answer: Mapping[str, Any] = await request.future
        return answer

    def _request(self, frame: dict[str, Any], receipt: bool = False) -> _Request:
        id = f"c{self._next_id}"
        self._next_id += 1
        frame["id"] = id
        # Serialised now: a body that is not JSON fails here, in the caller.
        return _Request(id, _dumps(frame), receipt)

    async def _transmit(self, request: _Request) -> None:
        """Writes a request, registered first so that its answer (which may
        come before the write returns) finds it."""
        ws = self._ws
        if ws is None:
            raise ConnectionLost("connection_lost", "not connected")
        self._waiting[request.id] = request
        self._order.append(request.id)
        # A loop waiting for buffer room reads on now: the answer may come
        # behind messages.
        self._room.set()
        if not await self._write(ws, request.frame):
            # The loop notices too and fails every waiting request.
            self._answered(request.id)
            _settle(request.future, error=ConnectionLost("connection_lost", "the connection dropped before the request went out"))

    async def _write(self, ws: ClientConnection, text: str) -> bool:
        """Writes one frame, after those before it; False when the
        connection has closed."""
        async with self._write_lock:
            try:
                await ws.send(text)
            except ConnectionClosed:
                return False
        return True

    def _sent(self, frame: Mapping[str, Any], receipt: bool) -> Sent:
        outcome: asyncio.Future[Outcome] | None = None
        status, sessions, msg_id = frame.get("status"), frame.get("sessions"), frame.get("msg_id")
        if status == "offline":
            outcome = asyncio.get_running_loop().create_future()
            reason = frame.get("reason")
            outcome.set_result(Outcome("stored" if frame.get("stored") is True else "offline", reason=reason if isinstance(reason, str) else None))  # type: ignore[arg-type]
        elif receipt and isinstance(sessions, int) and sessions > 0 and isinstance(msg_id, str):
            outcome = asyncio.get_running_loop().create_future()
            self._tracked[msg_id] = _Tracked(sessions, outcome)
        return Sent.parse(frame, outcome=outcome)

    async def _call(self, frame: dict[str, Any]) -> Mapping[str, Any]:
        """A request answered by a frame of its own (``pong``, ``watching``,
        ``ok``, ``history``, ``conversations``) or an error. Only on an open
        session: these are not queued."""
        if self._state == "closed":
            raise self._fatal or Closed("closed", "the client is closed")
        if self._ws is None or self._welcome is None:
            raise ConnectionLost("connection_lost", "not connected")
        request = self._request(frame)
        await self._transmit(request)
        answer: Mapping[str, Any] = await request.future
        return answer

    # ---- Receiving ---------------------------------------------------------

    def __aiter__(self) -> AsyncIterator[Message]:
        return self.messages()

    async def messages(self) -> AsyncIterator[Message]:
        """The messages for this client, in arrival order (carbons, inbox
        messages and group messages included), until the client is closed
        and its buffer read. Iterate from one place: each message is handed
        out once.

        Acks mode: a buffered message whose session ended unresumed (closed
        by :meth:`close`, 4008, the resume window passed) is not handed
        out: the node has answered its sender ``offline``. The reverse can
        happen: a message handed out before the client read that the node
        had closed its session (a slow consumer's 4008; at most the node's
        ``--session-queue`` of them) arrives though its sender heard
        ``offline``. Never is a sender told ``delivered`` of a message that
        was not handed out."""
        while True:
            if self._state == "closed" and self._inbox.empty():
                return
            item = await self._inbox.get()
            self._room.set()
            if item is None:
                return
            epoch, message = item
            if message.seq is not None:
                if epoch != self._epoch:
                    # Its session ended unresumed before the application
                    # took it: the node answered its sender offline, so it
                    # is not handed out now.
                    continue
                self._handed_seq = max(self._handed_seq, message.seq)
                self._confirm_later()
            yield message

    def on_welcome(self, listener: Callable[[Welcome], None]) -> Callable[[], None]:
        """A session began (or was resumed: ``welcome.resumed``). Each
        ``on_…`` returns the function that removes the listener."""
        return self._on_welcome.add(listener)

    def on_state(self, listener: Callable[[State], None]) -> Callable[[], None]:
        """The state changed."""
        return self._on_state.add(listener)

    def on_receipt(self, listener: Callable[[Receipt], None]) -> Callable[[], None]:
        """A later outcome of a message this client sent, at one session."""
        return self._on_receipt.add(listener)

    def on_presence(self, listener: Callable[[Presence], None]) -> Callable[[], None]:
        """v3: a watched client's state (see :meth:`watch`)."""
        return self._on_presence.add(listener)

    def on_signal(self, listener: Callable[[Signal], None]) -> Callable[[], None]:
        """v3: a signal from another client ("typing…")."""
        return self._on_signal.add(listener)

    def on_read(self, listener: Callable[[Read], None]) -> Callable[[], None]:
        """v3: a read cursor moved (this client's on another device, or the
        other client's in a two-client conversation)."""
        return self._on_read.add(listener)

    def on_error(self, listener: Callable[[SwitchboardError], None]) -> Callable[[], None]:
        """An error that answers no request (a failed ``get_token``, a
        refused re-watch)."""
        return self._on_error.add(listener)

    def on_disconnect(self, listener: Callable[[Disconnect], None]) -> Callable[[], None]:
        """The connection ended; a reconnect may follow."""
        return self._on_disconnect.add(listener)

    def on_retry(self, listener: Callable[[Retry], None]) -> Callable[[], None]:
        """The next connect is due."""
        return self._on_retry.add(listener)

    # ---- Presence and signals (v3) -----------------------------------------

    async def watch(self, clients: list[str]) -> Watching:
        """Watches these clients' presence: their state then comes to
        :meth:`on_presence` listeners, at once and on every change. Watches
        are kept by the client: a fresh session after a reconnect watches
        them again by itself (a resumed one kept them). While disconnected,
        returns once the next session has them."""
        added = [c for c in clients if c not in self._watched]
        for c in clients:
            self._watched.add(c)
            self._unsent_unwatch.discard(c)
        if self._state != "open":
            self._unsent_watch.update(clients)
            await self.ready()
            if self._rewatched is not None:
                await asyncio.shield(self._rewatched)
            return self._verdict(clients)
        try:
            await self._send_watches("watch", clients)
        except SwitchboardError as error:
            # Refused (too many, the node's store away): not watched, and not
            # asked for again. Lost with the connection: the next session
            # asks.
            if not isinstance(error, ConnectionLost):
                for c in added:
                    self._watched.discard(c)
            raise
        return self._verdict(clients)

    async def unwatch(self, clients: list[str]) -> None:
        """Stops watching these clients."""
        for c in clients:
            self._watched.discard(c)
            self._denied.discard(c)
            self._presence.pop(c, None)
            self._unsent_watch.discard(c)
        if self._state != "open":
            self._unsent_unwatch.update(clients)
            return
        await self._send_watches("unwatch", clients)

    def presence_of(self, client: str) -> Presence | None:
        """The last presence of a watched client, if any came yet."""
        return self._presence.get(client)

    async def set_visible(self, visible: bool) -> None:
        """``False``: watchers see this client offline (on every device)
        while messages still arrive; kept by the node across reconnects."""
        await self._call({"type": "visibility", "visible": visible})

    async def signal(self, to: str, body: Json) -> bool:
        """Sends a signal ("typing…", at most 1 KiB of JSON) to client
        ``to``: never acked or kept, and dropped by the node when over its
        rate or when the recipient is slow. Returns whether it was written
        (not while disconnected)."""
        return await self._signal({"type": "signal", "to": to, "body": body})

    async def signal_group(self, group: str, body: Json) -> bool:
        """Sends a signal to every other session of ``group``'s members."""
        return await self._signal({"type": "signal", "group": group, "body": body})

    async def _signal(self, frame: dict[str, Any]) -> bool:
        text = _dumps(frame)
        ws = self._ws
        if self._state != "open" or ws is None:
            return False
        return await self._write(ws, text)

    def _verdict(self, clients: list[str]) -> Watching:
        return Watching(
            clients=tuple(c for c in clients if c in self._watched and c not in self._denied),
            denied=tuple(c for c in clients if c in self._denied),
        )

    async def _send_watches(self, kind: str, clients: list[str]) -> None:
        chunks = [clients[i : i + WATCH_CHUNK] for i in range(0, len(clients), WATCH_CHUNK)]
        answers = await asyncio.gather(*(self._call({"type": kind, "clients": chunk}) for chunk in chunks))
        for answer in answers:
            if answer.get("type") != "watching":
                continue
            for c in answer.get("clients", []):
                self._denied.discard(c)
            for c in answer.get("denied", []):
                self._denied.add(c)

    async def _catch_up(self, resumed: bool) -> None:
        """After a welcome: a fresh session watches everything again; a
        resumed one (which kept its watches) catches up on what changed."""
        watch = list(self._unsent_watch) if resumed else list(self._watched)
        unwatch = list(self._unsent_unwatch) if resumed else []
        self._unsent_watch.clear()
        self._unsent_unwatch.clear()
        try:
            if watch:
                await self._send_watches("watch", watch)
            if unwatch:
                await self._send_watches("unwatch", unwatch)
        except ConnectionLost:
            pass
        except SwitchboardError as error:
            self._on_error.emit(error)

    # ---- History and read state (v3) ---------------------------------------

    async def history(
        self,
        peer: str | None = None,
        *,
        group: str | None = None,
        before: int | None = None,
        after: int | None = None,
        limit: int | None = None,
    ) -> History:
        """A page of a conversation, with client ``peer`` or of ``group``:
        messages oldest first, each with its ``cseq``; ``before`` or
        ``after`` a cseq, or the newest; ``History.more`` says whether others
        lie beyond. Raises :class:`NotAllowed` (a group this client is not
        in), :class:`NoHistory`, :class:`Unavailable`."""
        frame: dict[str, Any] = {"type": "history", **_thread(peer, group)}
        for key, value in (("before", before), ("after", after), ("limit", limit)):
            if value is not None:
                frame[key] = value
        return History.parse(await self._call(frame))

    async def conversations(self, *, before: int | None = None, limit: int | None = None) -> Conversations:
        """This client's conversations, most recent first, with their last
        message, unread counts and read cursors."""
        frame: dict[str, Any] = {"type": "conversations"}
        if before is not None:
            frame["before"] = before
        if limit is not None:
            frame["limit"] = limit
        return Conversations.parse(await self._call(frame))

    async def mark_read(self, peer: str | None = None, *, group: str | None = None, upto: int) -> None:
        """This client has read the conversation up to ``upto`` (a cseq):
        its other devices, and the other client of a two-client
        conversation, hear it as a :class:`Read`. The cursor only moves
        forward."""
        await self._call({"type": "read", **_thread(peer, group), "upto": upto})

    # ---- The connection loop -----------------------------------------------

    async def _run(self) -> None:
        while self._wanted:
            ws = await self._open()
            if ws is None:
                if self._wanted:
                    await self._pause()
                continue
            self._ws = ws
            try:
                await self._read(ws)
            except ConnectionClosed:
                pass  # a close with a code other than 1000: handled below
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("switchboard client: reading the connection failed")
            if self._ws is not ws:
                return  # closed by close()
            self._ws = None
            self._lost(ws.close_code if ws.close_code is not None else 1006, ws.close_reason or "")
            if self._wanted:
                await self._pause()

    async def _open(self) -> ClientConnection | None:
        """One connect attempt: the socket, or None (the reason recorded)."""
        try:
            url = await self._session_url()
        except Exception as error:
            self._on_error.emit(ConnectionLost("connection_lost", f"get_token failed: {error!r}"))
            return None
        try:
            return await ws_connect(
                url,
                compression=None,
                open_timeout=self._open_timeout,
                max_size=MAX_FRAME_BYTES,
                user_agent_header="switchboard-client-python",
            )
        except InvalidStatus as refused:
            self._refused(refused)
            return None
        except (OSError, WebSocketException, asyncio.TimeoutError) as error:
            log.debug("switchboard client: connect failed: %r", error)
            return None

    def _refused(self, refused: InvalidStatus) -> None:
        """The node answered the upgrade with a status: busy (wait its
        Retry-After), a passing failure (retry), or a refusal for good."""
        response = refused.response
        status = response.status_code
        retry_after = response.headers.get("Retry-After")
        if status == 503 and retry_after is not None and retry_after.isdigit():
            # Whole seconds: up to one more at random, so that clients told
            # the same second do not all come back at the same instant.
            self._not_before = time.monotonic() + int(retry_after) + random.random()
            return
        if status >= 500 or status in (408, 429) or (status == 401 and self._get_token is not None):
            # A fresh token may cure a 401; the others pass.
            return
        try:
            answer = json.loads(response.body or b"{}")
        except ValueError:
            answer = {}
        code = answer.get("error") if isinstance(answer, dict) else None
        message = answer.get("message") if isinstance(answer, dict) else None
        self._fatal = Refused(
            status,
            code if isinstance(code, str) else "refused",
            message if isinstance(message, str) else f"the node refused the connection ({status})",
        )
        self._wanted = False
        self._finish(self._fatal)

    async def _session_url(self) -> str:
        base = self._url.rstrip("/")
        if not base.endswith("/ws"):
            base += "/ws"
        query: dict[str, str] = {}
        token = self._token
        if self._get_token is not None:
            fetched = self._get_token()
            if not isinstance(fetched, str):
                # Bounded like the connect itself: a hung token service must
                # not stop the client from ever trying again.
                fetched = await asyncio.wait_for(fetched, self._open_timeout)
            token = fetched
        if token:
            query["token"] = token
        elif self._client_id is not None:
            query["client_id"] = self._client_id
        if self._device is not None:
            query["device"] = self._device
        if self._acks:
            query["acks"] = "1"
            if self._resume_token is not None:
                query["resume"] = self._resume_token
                query["upto"] = str(self._received_seq)
        return f"{base}?{urlencode(query)}"

    async def _pause(self) -> None:
        """Waits before the next attempt: a draining node's hint if it gave
        one, else full jitter up to the doubled ceiling; never before a busy
        node's Retry-After."""
        ceiling = min(self._max_delay, self._initial_delay * 2**self._attempt)
        delay = self._hint if self._hint is not None else random.random() * ceiling
        self._hint = None
        delay = max(delay, self._not_before - time.monotonic())
        self._attempt += 1
        self._on_retry.emit(Retry(self._attempt, delay))
        await asyncio.sleep(delay)

    async def _read(self, ws: ClientConnection) -> None:
        """Reads one connection until it ends: the welcome, then frames."""
        welcomed = False
        async for raw in ws:
            try:
                frame = json.loads(raw)
            except ValueError:
                log.warning("switchboard client: a frame that is not JSON: %.80r", raw)
                continue
            if not isinstance(frame, dict):
                continue
            try:
                if not welcomed:
                    if frame.get("type") == "welcome":
                        welcomed = True
                        await self._welcomed(ws, Welcome.parse(frame))
                    continue
                await self._receive(frame)
            except FrameError as error:
                log.warning("switchboard client: %s", error)

    async def _welcomed(self, ws: ClientConnection, welcome: Welcome) -> None:
        resumed = welcome.resumed is True
        if not resumed:
            # A new session: seqs start again, and what the old one owed
            # is not coming.
            self._epoch += 1
            self._received_seq = self._handed_seq = self._confirmed_seq = 0
            for tracked in self._tracked.values():
                _settle(tracked.future, Outcome("unknown", tuple(tracked.receipts)))
            self._tracked.clear()
        self._resume_token = welcome.resume_token
        self._welcome = welcome
        self._attempt = 0
        # What waited while disconnected goes out first, in order (sends
        # made meanwhile join the end of the queue).
        while self._queued and self._ws is ws:
            await self._transmit(self._queued.popleft())
        if self._ws is not ws:
            return
        self._set_state("open")
        # Before anyone waiting for the session hears of it: a watch made
        # while disconnected waits for this too.
        self._rewatched = self._in_background(self._catch_up(resumed))
        self._on_welcome.emit(welcome)
        if self._ready is not None:
            _settle(self._ready, welcome)
            self._ready = None
        # Messages handed out but not confirmed when the socket dropped.
        self._confirm_later()

    async def _receive(self, frame: Mapping[str, Any]) -> None:
        kind = frame.get("type")
        if kind == "message":
            message = Message.parse(frame)
            if message.seq is not None:
                # Written again after a resume: already here.
                if message.seq <= self._received_seq:
                    return
                self._received_seq = message.seq
            await self._make_room()
            self._inbox.put_nowait((self._epoch, message))
        elif kind == "ack":
            self._answer(frame.get("id"), frame)
        elif kind == "receipt":
            self._receipt(Receipt.parse(frame))
        elif kind == "error":
            message_text = frame.get("message")
            reason = frame.get("reason")
            error = from_frame(
                str(frame.get("code")),
                message_text if isinstance(message_text, str) else "",
                reason if isinstance(reason, str) else None,
            )
            # The node answers every request in reading order: an error
            # naming no id (a frame too large to read) answers the oldest.
            id = frame.get("id") or (self._order[0] if self._order else None)
            if not self._answer(id, None, error):
                self._on_error.emit(error)
        elif kind in ("watching", "ok", "history", "conversations", "pong"):
            self._answer(frame.get("id"), frame)
        elif kind == "presence":
            presence = Presence.parse(frame)
            # One that crossed an unwatch on its way is not news.
            if presence.client_id in self._watched:
                self._presence[presence.client_id] = presence
                self._on_presence.emit(presence)
        elif kind == "signal":
            self._on_signal.emit(Signal.parse(frame))
        elif kind == "read":
            self._on_read.emit(Read.parse(frame))

    async def _make_room(self) -> None:
        """Waits while the buffer is full (the application is behind: the
        socket is not read, and the node sees a slow consumer), unless a
        request waits for its answer, which comes behind these messages."""
        while self._inbox.qsize() >= self._max_buffered and not self._waiting:
            self._room.clear()
            await self._room.wait()

    def _answer(self, id: object, value: Mapping[str, Any] | None, error: SwitchboardError | None = None) -> bool:
        """Settles the request ``id``; False when none waits under it."""
        request = self._waiting.get(id) if isinstance(id, str) else None
        if request is None:
            return False
        self._answered(request.id)
        _settle(request.future, value, error)
        return True

    def _answered(self, id: str) -> None:
        self._waiting.pop(id, None)
        if self._order and self._order[0] == id:
            self._order.popleft()
        else:
            try:
                self._order.remove(id)
            except ValueError:
                pass

    def _receipt(self, receipt: Receipt) -> None:
        self._on_receipt.emit(receipt)
        tracked = self._tracked.get(receipt.msg_id)
        if tracked is None:
            return
        tracked.receipts.append(receipt)
        if len(tracked.receipts) < tracked.expected:
            return
        del self._tracked[receipt.msg_id]
        delivered = any(r.status == "delivered" for r in tracked.receipts)
        _settle(
            tracked.future,
            Outcome(
                "delivered" if delivered else "offline",
                tuple(tracked.receipts),
                None if delivered else tracked.receipts[0].reason,
            ),
        )

    def _lost(self, code: int, reason: str) -> None:
        """The socket ended: fail what waited on it; decide whether to come
        back."""
        self._stop_confirm_timer()
        hint = _RECONNECT_HINT.search(reason)
        self._hint = min(int(hint.group(1)), 60_000) / 1000 if hint else None
        self._on_disconnect.emit(Disconnect(code, reason))
        self._fail_waiting(ConnectionLost("connection_lost", "the connection dropped before the answer; a send may or may not have been routed"))
        if code == CloseCode.REPLACED:
            # Another session of this device took over: coming back would
            # close that one.
            self._wanted = False
            self._finish(Closed("closed", "replaced by a newer session of this device (4001)"))
        elif not self._reconnect:
            self._wanted = False
            self._finish(Closed("closed", f"the session ended ({code} {reason})".rstrip()))
        else:
            self._set_state("reconnecting")

    def _fail_waiting(self, error: SwitchboardError) -> None:
        for request in self._waiting.values():
            _settle(request.future, error=error)
        self._waiting.clear()
        self._order.clear()

    def _finish(self, error: SwitchboardError) -> None:
        """The client is done: everything still waiting hears ``error``."""
        self._fatal = self._fatal or (error if not isinstance(error, Closed) else None)
        for request in self._queued:
            _settle(request.future, error=error)
        self._queued.clear()
        self._fail_waiting(error)
        if self._ready is not None:
            _settle(self._ready, error=error)
            # Nobody may be waiting: do not warn of an unretrieved error.
            self._ready.exception()
            self._ready = None
        for tracked in self._tracked.values():
            _settle(tracked.future, Outcome("unknown", tuple(tracked.receipts)))
        self._tracked.clear()
        self._set_state("closed")
        self._inbox.put_nowait(None)

    def _set_state(self, state: State) -> None:
        if state != self._state:
            self._state = state
            self._on_state.emit(state)

    # ---- Acks mode: lazy confirmation --------------------------------------

    def _confirm_later(self) -> None:
        if not self._acks or self._handed_seq <= self._confirmed_seq:
            return
        if self._handed_seq - self._confirmed_seq >= self._confirm_every:
            self._stop_confirm_timer()
            self._in_background(self._confirm_now())
        elif self._confirm_timer is None:
            self._confirm_timer = asyncio.get_running_loop().call_later(
                self._confirm_after, lambda: self._in_background(self._confirm_now())
            )

    async def _confirm_now(self) -> None:
        self._stop_confirm_timer()
        ws = self._ws
        upto = self._handed_seq
        if ws is None or self._state != "open" or upto <= self._confirmed_seq:
            return
        before, self._confirmed_seq = self._confirmed_seq, upto
        if not await self._write(ws, _dumps({"type": "received", "upto": upto})):
            # Not confirmed: the next session of this one confirms it.
            self._confirmed_seq = min(self._confirmed_seq, before)

    def _in_background(self, work: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        task = asyncio.get_running_loop().create_task(work)
        self._background.add(task)
        task.add_done_callback(self._background.discard)
        return task

    def _stop_confirm_timer(self) -> None:
        if self._confirm_timer is not None:
            self._confirm_timer.cancel()
            self._confirm_timer = None


#: ``connect(url, client_id=…)`` makes a :class:`Client` (as
#: ``websockets.connect`` makes a connection): use it as
#: ``async with connect(...) as client:``, which waits for the first session
#: and closes it at the end, or call :meth:`Client.start` and
#: :meth:`Client.ready` yourself.
connect = Client
