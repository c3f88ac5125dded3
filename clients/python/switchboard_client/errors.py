"""Every error the client raises: one class per error code of the wire
contract, and the client's own (``queue_full``, ``connection_lost``,
``closed``, ``refused``)."""

from __future__ import annotations


class SwitchboardError(Exception):
    """The base of every error this package raises.

    ``code`` is the node's error code (``rate_limited``, ``not_member``, …)
    or one of the client's own; ``reason`` is the application's reason on
    a ``rejected`` send (its hook's ``error``, such as ``moderated``).
    """

    def __init__(self, code: str, message: str, reason: str | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.reason = reason

    def __repr__(self) -> str:
        extra = f", reason={self.reason!r}" if self.reason is not None else ""
        return f"{type(self).__name__}({self.code!r}, {self.message!r}{extra})"


class RateLimited(SwitchboardError):
    """``rate_limited``: over the session's rate; this send was dropped."""


class NotMember(SwitchboardError):
    """``not_member``: only members may send to a group."""


class TooLarge(SwitchboardError):
    """``too_large``: the frame is over the node's limit."""


class Unavailable(SwitchboardError):
    """``unavailable``: a backend the node needs is down; nothing was sent."""


class InvalidRecipient(SwitchboardError):
    """``invalid_recipient``: not a valid client or group id."""


class BadFrame(SwitchboardError):
    """``bad_frame`` or ``unknown_type``: the node could not read the frame."""


class Internal(SwitchboardError):
    """``internal``: the node failed; nothing was sent."""


class TooManyWatched(SwitchboardError):
    """``too_many_watched`` (v3): the watch would pass the node's
    ``--max-watched``; nothing of it was watched."""


class Rejected(SwitchboardError):
    """``rejected`` (v3): the application's backend refused the message;
    ``reason`` says why (``moderated``, …). Nothing was routed or stored."""


class NotAllowed(SwitchboardError):
    """``not_allowed`` (v3): history of a group this client is not in."""


class NoHistory(SwitchboardError):
    """``no_history`` (v3): the node keeps no history."""


class QueueFull(SwitchboardError):
    """Too many sends already wait for the connection (``max_queued``):
    this one was not sent."""


class ConnectionLost(SwitchboardError):
    """The connection dropped after the request went out and before its
    answer: a send may or may not have been routed."""


class Closed(SwitchboardError):
    """The client is closed (by :meth:`Client.close`, by leaving its
    ``async with``, or replaced by a newer session of its device): not
    sent."""


class Refused(SwitchboardError):
    """The node refused the connection for good (an HTTP 4xx answer to the
    upgrade: a bad client id, a banned client, a bad token with no
    ``get_token`` to fetch another). ``status`` is the HTTP status; ``code``
    the node's ``error`` (``unauthorized``, ``banned``, …)."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(code, message)
        self.status = status


_BY_CODE: dict[str, type[SwitchboardError]] = {
    "rate_limited": RateLimited,
    "not_member": NotMember,
    "too_large": TooLarge,
    "unavailable": Unavailable,
    "invalid_recipient": InvalidRecipient,
    "bad_frame": BadFrame,
    "unknown_type": BadFrame,
    "internal": Internal,
    "too_many_watched": TooManyWatched,
    "rejected": Rejected,
    "not_allowed": NotAllowed,
    "no_history": NoHistory,
}


def from_frame(code: str, message: str, reason: str | None = None) -> SwitchboardError:
    """The typed error for an ``error`` frame (a code this version does not
    know reads as :class:`BadFrame`, as the contract's catch-all)."""
    return _BY_CODE.get(code, BadFrame)(code, message, reason)
