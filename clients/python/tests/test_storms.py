"""Storms (v3): a busy node's Retry-After is never undercut, and a draining
node's reconnect hint is followed. Real node processes; the client's
connects are observed by wrapping the function it opens sockets with."""

from __future__ import annotations

import asyncio
import re
import time
import unittest
from typing import Any
from unittest import mock

import switchboard_client as sb
from websockets.asyncio.client import ClientConnection
from websockets.asyncio.client import connect as _real_connect
from websockets.exceptions import InvalidStatus

from support import Case, next_event, start_nats, start_node, start_redis, within

CLIENTS = 30
RATE = 5
#: 30 clients at 5/s (with a burst of 5) is 5 s of backlog; a refused
#: client waits its Retry-After (whole seconds, at most the backlog) and up
#: to 1 s of jitter, and is rarely refused twice.
ALL_IN_WITHIN = 20.0

#: Where the client opens its sockets: wrapped to watch its attempts.
OPENER = "switchboard_client.client.ws_connect"


class Storms(Case):
    async def test_a_busy_nodes_retry_after_is_never_undercut_and_everyone_gets_in(self) -> None:
        node = start_node(self, ["--max-connect-rate", str(RATE)])
        attempts: dict[str, list[float]] = {}
        not_before: dict[str, list[float]] = {}

        async def observed(url: str, **options: Any) -> ClientConnection:
            who = re.search(r"client_id=(\w+)", url)
            assert who is not None
            attempts.setdefault(who[1], []).append(time.monotonic())
            try:
                return await _real_connect(url, **options)
            except InvalidStatus as refused:
                response = refused.response
                self.assertEqual(response.status_code, 503)
                seconds = int(response.headers["Retry-After"])
                self.assertTrue(1 <= seconds <= 60, seconds)
                not_before.setdefault(who[1], []).append(time.monotonic() + seconds)
                raise

        with mock.patch(OPENER, observed):
            started = time.monotonic()
            clients = [await self.client(node.url, client_id=f"storm{i}", acks=False, initial_delay=0.05) for i in range(CLIENTS)]
            welcomed = await asyncio.wait_for(asyncio.gather(*(c.ready() for c in clients)), ALL_IN_WITHIN)
        took = time.monotonic() - started
        self.assertEqual(len(welcomed), CLIENTS)
        refused = 0
        for name, times in attempts.items():
            refusals = not_before.get(name, [])
            refused += len(refusals)
            self.assertEqual(len(times), len(refusals) + 1, f"{name}: one attempt per refusal, then in")
            for k, due in enumerate(refusals):
                # Timers fire late, never early; 5 ms of clock granularity.
                self.assertGreaterEqual(times[k + 1], due - 0.005, f"{name} retried {due - times[k + 1]:.3f} s before its Retry-After")
        self.assertGreaterEqual(refused, CLIENTS - 2 * RATE, f"the rate held: {refused} refusals")
        print(f"\nstorm: {CLIENTS} clients at --max-connect-rate {RATE}: all in after {took:.1f} s, {refused} refusals")

    async def test_a_draining_nodes_reconnect_hint_is_followed(self) -> None:
        redis = start_redis(self)
        nats = start_nats(self)
        flags = ["--redis-url", redis, "--nats-url", f"nats://127.0.0.1:{nats.port}", "--resume-secret", "s", "--drain-spread-ms", "1500"]
        a = start_node(self, [*flags, "--node-id", "hint-a"])
        b = start_node(self, [*flags, "--node-id", "hint-b"])

        async def to_b_after_the_first(url: str, **options: Any) -> ClientConnection:
            if "resume=" in url:
                url = url.replace(a.url, b.url)
            return await _real_connect(url, **options)

        with mock.patch(OPENER, to_b_after_the_first):
            clients = [await self.ready(a.url, client_id=f"hint{i}", initial_delay=0.01, max_delay=0.02) for i in range(10)]
            hints = [next_event(c.on_disconnect) for c in clients]
            back = [next_event(c.on_welcome) for c in clients]
            drained = asyncio.ensure_future(a.drain())
            seen = await within(asyncio.gather(*hints))
            at_hint = time.monotonic()
            returned = await within(asyncio.gather(*back))
            # The clients' return, not the drain's end (which forwards for
            # a second more after the last resume).
            waited = time.monotonic() - at_hint
            await within(drained)
        spread = []
        for disconnect, welcome in zip(seen, returned):
            self.assertEqual(disconnect.code, sb.CloseCode.GOING_AWAY)
            hint = re.search(r"reconnect_after_ms=(\d+)", disconnect.reason)
            assert hint is not None, disconnect.reason
            spread.append(int(hint[1]))
            self.assertTrue(welcome.resumed, "resumed on the other node")
        self.assertTrue(all(0 <= h < 1500 for h in spread), spread)
        self.assertGreaterEqual(len(set(spread)), 8, f"hints spread: {spread}")
        # Everyone back within the window (1.5 s), plus a second for the
        # resumes themselves on a loaded machine.
        self.assertLess(waited, 1.5 + 1.0)

    async def test_each_client_waits_its_own_hint(self) -> None:
        redis = start_redis(self)
        nats = start_nats(self)
        flags = ["--redis-url", redis, "--nats-url", f"nats://127.0.0.1:{nats.port}", "--resume-secret", "s", "--drain-spread-ms", "1000"]
        a = start_node(self, [*flags, "--node-id", "wait-a"])
        b = start_node(self, [*flags, "--node-id", "wait-b"])
        closed_at: list[float] = []
        reopened_at: list[float] = []

        async def timed(url: str, **options: Any) -> ClientConnection:
            if "resume=" in url:
                reopened_at.append(time.monotonic())
                url = url.replace(a.url, b.url)
            return await _real_connect(url, **options)

        with mock.patch(OPENER, timed):
            client = await self.ready(a.url, client_id="patient", initial_delay=0.01, max_delay=0.02)
            gone = next_event(client.on_disconnect)
            retry = next_event(client.on_retry)
            drained = asyncio.ensure_future(a.drain())
            disconnect = await within(gone)
            closed_at.append(time.monotonic())
            planned = await within(retry)
            await within(client.ready())
            await within(drained)
        hint = re.search(r"reconnect_after_ms=(\d+)", disconnect.reason)
        assert hint is not None
        self.assertAlmostEqual(planned.delay, int(hint[1]) / 1000, delta=0.001)
        self.assertGreaterEqual(reopened_at[0] - closed_at[0], int(hint[1]) / 1000 - 0.01)


if __name__ == "__main__":
    unittest.main()
