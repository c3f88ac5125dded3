"""A moderation service: the node's hook backend and a chat participant.

    python3 clients/python/examples/moderation.py --listen 127.0.0.1:9100 \\
        --secret s3cr3t --url ws://127.0.0.1:8080 --block spam,scam --admin ops
    switchboard --hook-url http://127.0.0.1:9100/hook --hook-secret s3cr3t

As the hook backend (docs/protocol.md, "Backend hooks") it answers the node
before every connect and every send, checking each call's signature:

- a send whose body mentions a blocked word is refused: the sender gets
  error ``rejected`` with reason ``moderated``, and nothing is routed;
- a client refused three times is banned: its next connect gets 403
  ``banned`` (sessions it has open go on until they end).

As the client ``moderator`` it tells an offender its strikes, and takes
commands from the admins: ``{"ban": "mallory"}``, ``{"unban": "mallory"}``
or ``{"strikes": "mallory"}`` sent to ``moderator`` are answered with the
client's standing.

The HTTP side is a few lines of asyncio (HTTP/1.1, kept-alive connections
as the node keeps them): this package's one dependency is ``websockets``.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import hmac
import json
import signal
from dataclasses import dataclass, field
from typing import Any

import switchboard_client as sb

STRIKES_TO_BAN = 3


@dataclass
class Moderation:
    """The service's state: who is banned, who has strikes."""

    #: The moderator's own client id: its notices quote the word.
    me: str
    blocked: list[str]
    admins: set[str]
    banned: set[str] = field(default_factory=set)
    strikes: dict[str, int] = field(default_factory=dict)
    #: Offenders to tell, by the chat side.
    notices: asyncio.Queue[tuple[str, dict[str, Any]]] = field(default_factory=lambda: asyncio.Queue(1000))

    def decide(self, call: dict[str, Any]) -> dict[str, Any]:
        """The answer to one hook call."""
        client = str(call.get("client_id") if call.get("hook") == "connect" else call.get("from"))
        if call.get("hook") == "connect":
            if client in self.banned:
                return {"allow": False, "status": 403, "error": "banned", "message": f"{client} is banned"}
            return {"allow": True}
        if client == self.me:
            return {"allow": True}
        text = json.dumps(call.get("body"), ensure_ascii=False).lower()
        word = next((w for w in self.blocked if w in text), None)
        if word is None:
            return {"allow": True}
        self.strikes[client] = self.strikes.get(client, 0) + 1
        if self.strikes[client] >= STRIKES_TO_BAN:
            self.banned.add(client)
        notice = {"moderated": word, "strikes": self.strikes[client], "banned": client in self.banned}
        try:
            self.notices.put_nowait((client, notice))
        except asyncio.QueueFull:
            pass  # the sender still got its error; only the notice is skipped
        return {"allow": False, "error": "moderated", "message": f"messages may not mention {word!r}"}

    def command(self, sender: str, body: Any) -> dict[str, Any]:
        """An admin's command, and its answer."""
        if sender not in self.admins:
            return {"error": "only admins give commands"}
        if not isinstance(body, dict) or len(body) != 1:
            return {"error": 'send {"ban": id}, {"unban": id} or {"strikes": id}'}
        (verb, client), = body.items()
        if verb == "ban":
            self.banned.add(str(client))
        elif verb == "unban":
            self.banned.discard(str(client))
            self.strikes.pop(str(client), None)
        elif verb != "strikes":
            return {"error": f"unknown command {verb!r}"}
        return {"client": client, "banned": client in self.banned, "strikes": self.strikes.get(str(client), 0)}


class HookServer:
    """The hook endpoint: ``POST /hook`` with a signed JSON call."""

    def __init__(self, moderation: Moderation, secret: str) -> None:
        self.moderation = moderation
        self.secret = secret.encode()

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                request_line, *lines = head.decode("latin-1").split("\r\n")
                headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines if line)}
                body = await reader.readexactly(int(headers.get("content-length", "0")))
                status, answer = self.answer(request_line, headers, body)
                payload = json.dumps(answer).encode()
                writer.write(
                    f"HTTP/1.1 {status} {'OK' if status == 200 else 'Error'}\r\ncontent-type: application/json\r\n"
                    f"content-length: {len(payload)}\r\n\r\n".encode() + payload
                )
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, ValueError):
            pass  # the node closed the kept-alive connection, or sent garbage
        finally:
            writer.close()

    def answer(self, request_line: str, headers: dict[str, str], body: bytes) -> tuple[int, dict[str, Any]]:
        if not request_line.startswith("POST /hook "):
            return 404, {"error": "POST /hook"}
        expected = "sha256=" + hmac.new(self.secret, body, hashlib.sha256).hexdigest()
        if not hmac.compare_digest(expected, headers.get("x-switchboard-signature", "")):
            return 401, {"error": "bad signature"}
        try:
            call = json.loads(body)
        except ValueError:
            return 400, {"error": "not JSON"}
        if not isinstance(call, dict):
            return 400, {"error": "not a JSON object"}
        return 200, self.moderation.decide(call)


async def chat(moderation: Moderation, url: str, name: str) -> None:
    """The moderator as a chat participant: notices out, commands in."""
    async with sb.connect(url, client_id=name) as moderator:
        print(f"moderator online as {name}", flush=True)

        async def tell() -> None:
            while True:
                client, notice = await moderation.notices.get()
                try:
                    await moderator.send(client, notice)
                except sb.SwitchboardError as error:
                    print(f"no notice to {client}: {error!r}", flush=True)

        teller = asyncio.ensure_future(tell())
        try:
            async for message in moderator:
                if message.group is None and not message.carbon:
                    await moderator.send(message.sender, moderation.command(message.sender, message.body))
        finally:
            teller.cancel()


async def main() -> None:
    parser = argparse.ArgumentParser(description="A moderation hook backend and chat participant.")
    parser.add_argument("--listen", default="127.0.0.1:9100", help="where the node calls the hooks")
    parser.add_argument("--secret", required=True, help="the node's --hook-secret")
    parser.add_argument("--url", default="ws://127.0.0.1:8080", help="the node, for the moderator's session")
    parser.add_argument("--as", dest="name", default="moderator")
    parser.add_argument("--block", default="spam", help="blocked words, comma-separated")
    parser.add_argument("--admin", default="", help="client ids that may give commands, comma-separated")
    args = parser.parse_args()
    moderation = Moderation(
        me=args.name,
        blocked=[w.strip().lower() for w in args.block.split(",") if w.strip()],
        admins={a.strip() for a in args.admin.split(",") if a.strip()},
    )
    host, _, port = args.listen.rpartition(":")
    server = await asyncio.start_server(HookServer(moderation, args.secret).serve, host, int(port))
    print(f"hook backend on http://{args.listen}/hook", flush=True)
    # The node asks this service before admitting the moderator itself:
    # the hook endpoint is up before the chat side connects.
    moderator = asyncio.ensure_future(chat(moderation, args.url, args.name))
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, moderator.cancel)
    async with server:
        try:
            await moderator
        except asyncio.CancelledError:
            print("moderation: bye", flush=True)


if __name__ == "__main__":
    asyncio.run(main())
