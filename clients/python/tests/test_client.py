"""The client against real node processes (and Redis and NATS where a
cluster is the subject): every frame, every typed error, reconnects,
resume, token refresh."""

from __future__ import annotations

import asyncio
import unittest

import switchboard_client as sb
from switchboard_client.errors import from_frame

from support import (
    Case,
    api,
    eventually,
    free_port,
    next_event,
    next_message,
    start_nats,
    start_node,
    start_redis,
    token,
    within,
)


class Frames(Case):
    async def test_welcome_ack_message_and_delivered_receipt_on_one_node(self) -> None:
        node = start_node(self, ["--history", "memory"])
        alice = await self.ready(node.url, client_id="alice")
        bob = await self.ready(node.url, client_id="bob", device="phone")
        assert bob.welcome is not None
        self.assertEqual((bob.welcome.client_id, bob.welcome.device), ("bob", "phone"))
        self.assertIsNotNone(bob.welcome.resume_token, "acks mode is the default")
        receipts: list[sb.Receipt] = []
        alice.on_receipt(receipts.append)

        sent = await within(alice.send("bob", {"text": "hi"}, receipt=True))
        self.assertEqual((sent.status, sent.sessions, sent.cseq), ("local", 1, 1))
        message = await within(next_message(bob))
        self.assertEqual((message.sender, message.to, message.body, message.cseq, message.seq), ("alice", "bob", {"text": "hi"}, 1, 1))
        self.assertEqual(message.msg_id, sent.msg_id)
        assert sent.outcome is not None
        outcome = await within(sent.outcome)
        self.assertEqual(outcome.status, "delivered")
        self.assertEqual([(r.status, r.to, r.device) for r in outcome.receipts], [("delivered", "bob", "phone")])
        self.assertEqual(len(receipts), 1)

        # No receipt asked: no outcome to wait for. history=False: no cseq.
        quiet = await within(alice.send("bob", 2, history=False))
        self.assertIsNone(quiet.outcome)
        self.assertIsNone(quiet.cseq)
        await within(alice.ping())

    async def test_errors_are_typed_and_the_session_goes_on(self) -> None:
        node = start_node(self, ["--max-frame-bytes", "1024", "--rate-limit", "1", "--rate-burst", "6", "--api-key", "k"])
        alice = await self.ready(node.url, client_id="alice", acks=False)
        with self.assertRaises(sb.InvalidRecipient) as bad:
            await within(alice.send("not a client id", 1))
        self.assertEqual(bad.exception.code, "invalid_recipient")
        with self.assertRaises(sb.TooLarge):
            await within(alice.send("bob", "x" * 2000))
        with self.assertRaises(sb.NotMember):
            await within(alice.send_group("team", 1))
        with self.assertRaises(sb.NoHistory):
            await within(alice.history("bob"))
        with self.assertRaises(ValueError):
            await alice.history()  # neither a peer nor a group
        with self.assertRaises(TypeError):
            await alice.send("bob", object())  # not JSON: nothing written
        # The burst is spent: over the rate, the next frames are refused.
        refused = 0
        for n in range(6):
            try:
                await within(alice.send("bob", n))
            except sb.RateLimited as error:
                self.assertEqual(error.code, "rate_limited")
                refused += 1
        self.assertGreater(refused, 0)
        self.assertEqual(alice.state, "open", "errors do not end the session")

    def test_every_error_code_has_its_class(self) -> None:
        classes = {
            "rate_limited": sb.RateLimited,
            "not_member": sb.NotMember,
            "too_large": sb.TooLarge,
            "unavailable": sb.Unavailable,
            "invalid_recipient": sb.InvalidRecipient,
            "bad_frame": sb.BadFrame,
            "unknown_type": sb.BadFrame,
            "internal": sb.Internal,
            "too_many_watched": sb.TooManyWatched,
            "rejected": sb.Rejected,
            "not_allowed": sb.NotAllowed,
            "no_history": sb.NoHistory,
            "from_a_later_version": sb.BadFrame,
        }
        for code, cls in classes.items():
            error = from_frame(code, "m", "moderated" if code == "rejected" else None)
            self.assertIs(type(error), cls, code)
            self.assertEqual(error.code, code)
        self.assertEqual(from_frame("rejected", "m", "moderated").reason, "moderated")

    async def test_carbons_groups_and_nats_away_is_unavailable(self) -> None:
        redis = start_redis(self)
        nats = start_nats(self)
        cluster = ["--redis-url", redis, "--nats-url", f"nats://127.0.0.1:{nats.port}", "--api-key", "k"]
        a = start_node(self, [*cluster, "--node-id", "a"])
        b = start_node(self, [*cluster, "--node-id", "b"])
        for member in ("alice", "bob", "carol"):
            self.assertEqual(api(a, "PUT", f"/api/v1/groups/team/members/{member}", "k")[0], 204)
        laptop = await self.ready(a.url, client_id="alice", device="laptop")
        phone = await self.ready(b.url, client_id="alice", device="phone")
        bob = await self.ready(b.url, client_id="bob")

        sent = await within(laptop.send("bob", "hello", receipt=True))
        self.assertEqual(sent.status, "remote")
        got = await within(next_message(bob))
        self.assertEqual((got.body, got.carbon), ("hello", False))
        carbon = await within(next_message(phone))
        self.assertEqual((carbon.body, carbon.carbon, carbon.to), ("hello", True, "bob"))

        group = await within(laptop.send_group("team", "all"))
        self.assertEqual(group.status, "fanout")
        self.assertEqual((group.local, group.remote, group.offline), (0, 2, 1), group)
        for client in (bob, phone):
            message = await within(next_message(client))
            self.assertEqual((message.group, message.body, message.sender), ("team", "all", "alice"))

        nats.kill()
        with self.assertRaises(sb.Unavailable):
            await within(laptop.send("bob", "while the bus is away"))

    async def test_offline_sends_say_why_and_the_inbox_keeps_them(self) -> None:
        node = start_node(self, ["--inbox", "memory"])
        alice = await self.ready(node.url, client_id="alice")
        never = await within(alice.send("carol", 1))
        self.assertEqual((never.status, never.reason), ("offline", "never_seen"))
        assert never.outcome is not None
        self.assertEqual((await within(never.outcome)).status, "offline")

        bob = await self.ready(node.url, client_id="bob")
        await bob.close()
        gone = await within(alice.send("bob", "kept", store=True))
        self.assertEqual((gone.status, gone.reason, gone.stored), ("offline", "disconnected", True))
        assert gone.outcome is not None
        self.assertEqual((await within(gone.outcome)).status, "stored")

        again = await self.ready(node.url, client_id="bob")
        assert again.welcome is not None
        self.assertEqual(again.welcome.inbox, 1)
        stored = await within(next_message(again))
        self.assertEqual((stored.body, stored.stored), ("kept", True))


class Connection(Case):
    async def test_sends_while_disconnected_queue_up_to_the_bound_then_close_refuses_them(self) -> None:
        port = free_port()  # nobody listens there
        alice = await self.client(f"ws://127.0.0.1:{port}", client_id="alice", max_queued=2, initial_delay=0.05, max_delay=0.2)
        states: list[str] = []
        alice.on_state(states.append)
        first = asyncio.ensure_future(alice.send("bob", 1))
        second = asyncio.ensure_future(alice.send("bob", 2))
        await asyncio.sleep(0)  # both are queued
        with self.assertRaises(sb.QueueFull):
            await alice.send("bob", 3)
        retried = next_event(alice.on_retry, lambda r: r.attempt >= 2)
        await within(retried, "it keeps retrying")
        self.assertEqual(await alice.close(), None, "never connected")
        for queued in (first, second):
            with self.assertRaises(sb.Closed):
                await queued
        with self.assertRaises(sb.Closed):
            await alice.send("bob", 4)
        self.assertEqual(alice.state, "closed")
        self.assertEqual(states[-1], "closed")

    async def test_get_token_is_called_for_every_reconnect_and_queued_sends_go_out_after_it(self) -> None:
        secret = "jwt-secret-for-the-python-tests"
        node = start_node(self, ["--jwt-secret", secret])
        calls = 0

        async def get_token() -> str:
            nonlocal calls
            calls += 1
            return token(secret, "alice", 60)

        alice = await self.ready(node.url, get_token=get_token, initial_delay=0.05, max_delay=0.3)
        self.assertEqual(calls, 1)
        await node.drain()
        await eventually("the client notices", lambda: alice.state == "reconnecting")
        queued = asyncio.ensure_future(alice.send("alice", "to myself, sent while away"))
        start_node(self, ["--jwt-secret", secret], port=node.port)
        await within(alice.ready())
        self.assertGreaterEqual(calls, 2)
        sent = await within(queued)
        self.assertEqual(sent.status, "local")
        mine = await within(next_message(alice))
        self.assertEqual(mine.body, "to myself, sent while away")

    async def test_a_refused_connect_is_raised_not_retried(self) -> None:
        secret = "s"
        node = start_node(self, ["--jwt-secret", secret])
        with self.assertRaises(sb.Refused) as refused:
            async with sb.connect(node.url, token=token("another secret", "alice")):
                pass
        self.assertEqual(refused.exception.status, 401)
        bad = sb.connect(node.url, token=token(secret, "not a valid id"))
        with self.assertRaises(sb.Refused) as invalid:
            async with bad:
                pass
        self.assertEqual(invalid.exception.status, 400)
        self.assertEqual(bad.state, "closed")
        with self.assertRaises(ValueError):
            sb.connect("http://127.0.0.1:1", client_id="alice")
        with self.assertRaises(ValueError):
            sb.connect(node.url)  # no identity

    async def test_a_newer_session_of_the_device_replaces_it_for_good(self) -> None:
        node = start_node(self)
        first = await self.ready(node.url, client_id="alice", device="phone")
        gone = next_event(first.on_disconnect)
        await self.ready(node.url, client_id="alice", device="phone")
        self.assertEqual((await within(gone)).code, sb.CloseCode.REPLACED)
        await eventually("the first client closed", lambda: first.state == "closed")
        with self.assertRaises(sb.Closed):
            await first.send("bob", 1)

    async def test_a_restart_of_its_node_loses_nothing_the_client_resumes_on_the_cluster(self) -> None:
        redis = start_redis(self)
        nats = start_nats(self)
        cluster = ["--redis-url", redis, "--nats-url", f"nats://127.0.0.1:{nats.port}", "--resume-secret", "py-tests"]
        a = start_node(self, [*cluster, "--node-id", "a"])
        b = start_node(self, [*cluster, "--node-id", "b"])
        alice = await self.ready(a.url, client_id="alice", acks=False)
        bob = await self.ready(b.url, client_id="bob", device="tab-1", initial_delay=0.05, max_delay=0.5)
        welcomes: list[sb.Welcome] = []
        bob.on_welcome(welcomes.append)
        got: list[sb.Message] = []

        async def read() -> None:
            async for message in bob:
                got.append(message)

        reader = asyncio.ensure_future(read())
        self.addCleanup(reader.cancel)
        outcomes: list[asyncio.Future[sb.Outcome]] = []

        async def say(n: int) -> None:
            sent = await within(alice.send("bob", n, receipt=True))
            self.assertNotEqual(sent.status, "offline", f"message {n}: {sent}\n{a.log()}\n{b.log()}")
            assert sent.outcome is not None
            outcomes.append(sent.outcome)

        await say(1)
        await eventually("bob has message 1", lambda: len(got) == 1)
        # node-b drains: bob's session is detached and passed on to node-a;
        # alice writes while bob is away; node-b comes back on its address
        # (and bob resumes there or, by his hint, wherever he reaches).
        await b.drain()
        for n in range(2, 6):
            await say(n)
        start_node(self, [*cluster, "--node-id", "b"], port=b.port)
        await eventually("bob resumed and has every message", lambda: len(got) >= 5)
        self.assertTrue(any(w.resumed for w in welcomes), welcomes)
        self.assertEqual([m.body for m in got], [1, 2, 3, 4, 5], "once each, in order")
        done = await within(asyncio.gather(*outcomes))
        self.assertEqual([o.status for o in done], ["delivered"] * 5)



class WorstMinute(Case):
    """What a slow application and a crashed node do to the client."""

    async def test_a_reader_that_falls_behind_resumes_and_every_sender_hears(self) -> None:
        node = start_node(self, ["--session-queue", "8"])
        alice = await self.ready(node.url, client_id="alice", acks=False)
        # bob's application does not iterate yet: his client buffers one
        # message, then stops reading the socket, and confirms nothing. The
        # node closes the session as a slow consumer (4008) and, acks mode,
        # keeps it for a resume.
        bob = await self.ready(node.url, client_id="bob", max_buffered=1, initial_delay=0.05)
        closes = next_event(bob.on_disconnect)
        back = next_event(bob.on_welcome)
        sends = []
        for n in range(40):
            sent = await within(alice.send("bob", n, receipt=True))
            sends.append(sent)
        # The application catches up: the client reads the 4008, resumes,
        # and what was kept follows.
        got: list[int] = []

        async def read() -> None:
            async for message in bob:
                got.append(message.body)

        reader = asyncio.ensure_future(read())
        self.addCleanup(reader.cancel)
        self.assertEqual((await within(closes)).code, sb.CloseCode.SLOW_CONSUMER)
        self.assertTrue((await within(back)).resumed)
        pending = [s.outcome for s in sends if s.outcome is not None]
        settled = await within(asyncio.gather(*pending), "every sender hears")
        self.assertEqual(len(settled), 40, "an outcome for every send")
        delivered = {n for n, outcome in enumerate(settled) if outcome.status == "delivered"}
        self.assertEqual(got, sorted(set(got)), "in order, none twice")
        self.assertEqual(delivered, set(got), "delivered exactly what the application took")
        self.assertTrue(delivered, "some arrived")

    async def test_an_application_that_sends_from_its_loop_under_a_flood_gets_its_answers(self) -> None:
        node = start_node(self)
        alice = await self.ready(node.url, client_id="alice", acks=False)
        # A bot that answers each message from its loop, with room for two
        # unread messages: 50 arrive at once, so the ack of each answer comes
        # behind dozens of messages the buffer has no room for.
        bot = await self.ready(node.url, client_id="bot", max_buffered=2)
        for n in range(50):
            self.assertEqual((await within(alice.send("bot", n))).status, "local")
        answered: list[int] = []
        async for message in bot:
            sent = await within(bot.send("alice", message.body), f"no ack after {answered}")
            self.assertEqual(sent.status, "local")
            answered.append(message.body)
            if len(answered) == 50:
                break
        self.assertEqual(answered, list(range(50)))

    async def test_a_killed_node_leaves_no_false_delivery(self) -> None:
        node = start_node(self)
        alice = await self.ready(node.url, client_id="alice", initial_delay=0.05, max_delay=0.2)
        bob = await self.ready(node.url, client_id="bob", initial_delay=0.05, max_delay=0.2)
        sent = await within(alice.send("bob", "before the crash", receipt=True))
        assert sent.outcome is not None
        # bob's application has not taken it yet: unconfirmed when the node
        # dies. The node comes back empty (in-memory presence).
        node.kill()
        again = start_node(self, port=node.port)
        fresh = await within(next_event(bob.on_welcome))
        self.assertFalse(fresh.resumed)
        self.assertEqual((await within(sent.outcome)).status, "unknown", "never delivered")
        await within(alice.ready())
        after = await within(alice.send("bob", "after the crash"))
        self.assertEqual(after.status, "local", again.log())
        # The message of the dead session is not handed out: its sender
        # never heard delivered, and the new session numbers from 1.
        message = await within(next_message(bob))
        self.assertEqual((message.body, message.seq), ("after the crash", 1))


if __name__ == "__main__":
    unittest.main()
