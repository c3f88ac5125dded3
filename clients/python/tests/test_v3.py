"""Version 3 against a real node: presence of watched clients, signals,
history paging, conversations with unread counts, read receipts."""

from __future__ import annotations

import asyncio
import unittest

import switchboard_client as sb

from support import Case, api, next_event, next_message, start_node, token, within


class Presence(Case):
    async def test_a_watched_client_goes_online_and_offline(self) -> None:
        node = start_node(self, ["--presence-coalesce-ms", "50"])
        alice = await self.ready(node.url, client_id="alice")
        updates: list[sb.Presence] = []
        alice.on_presence(updates.append)

        first = next_event(alice.on_presence)
        watching = await within(alice.watch(["bob"]))
        self.assertEqual((watching.clients, watching.denied), (("bob",), ()))
        self.assertEqual((await within(first)).state, "offline")

        online = next_event(alice.on_presence, lambda p: p.state == "online")
        bob = await self.ready(node.url, client_id="bob", device="phone")
        seen = await within(online)
        self.assertEqual((seen.client_id, seen.devices), ("bob", ("phone",)))
        self.assertEqual(alice.presence_of("bob"), seen)

        offline = next_event(alice.on_presence, lambda p: p.state == "offline")
        await bob.close()
        gone = await within(offline)
        self.assertEqual(gone.devices, ())
        self.assertIsNotNone(gone.last_seen)

        # Unwatched: no more news of bob.
        await within(alice.unwatch(["bob"]))
        self.assertIsNone(alice.presence_of("bob"))
        count = len(updates)
        await self.ready(node.url, client_id="bob")
        await within(alice.ping())  # the node has handled bob's connect by now
        self.assertEqual(len(updates), count)

    async def test_strangers_are_denied_and_too_many_is_refused(self) -> None:
        secret = "s"
        node = start_node(self, ["--jwt-secret", secret, "--api-key", "k", "--max-watched", "2"])
        self.assertEqual(api(node, "PUT", "/api/v1/contacts/alice/bob", "k")[0], 204)
        alice = await self.ready(node.url, token=token(secret, "alice"))
        watching = await within(alice.watch(["bob", "mallory"]))
        self.assertEqual((watching.clients, watching.denied), (("bob",), ("mallory",)))
        with self.assertRaises(sb.TooManyWatched):
            await within(alice.watch(["carol", "dave", "erin"]))

    async def test_invisible_reads_as_offline(self) -> None:
        node = start_node(self, ["--presence-coalesce-ms", "50"])
        alice = await self.ready(node.url, client_id="alice")
        bob = await self.ready(node.url, client_id="bob")
        online = next_event(alice.on_presence, lambda p: p.state == "online")
        await within(alice.watch(["bob"]))
        await within(online)
        hidden = next_event(alice.on_presence, lambda p: p.state == "offline")
        await within(bob.set_visible(False))
        await within(hidden)


class Signals(Case):
    async def test_a_signal_arrives_and_is_never_acked(self) -> None:
        node = start_node(self)
        alice = await self.ready(node.url, client_id="alice")
        bob = await self.ready(node.url, client_id="bob")
        signal = next_event(bob.on_signal)
        self.assertTrue(await alice.signal("bob", {"typing": True}))
        got = await within(signal)
        self.assertEqual((got.sender, got.to, got.body), ("alice", "bob", {"typing": True}))
        await within(alice.ping())  # nothing answered the signal before the pong

    async def test_a_signal_while_disconnected_is_not_written(self) -> None:
        node = start_node(self)
        alice = await self.ready(node.url, client_id="alice")
        await alice.close()
        self.assertFalse(await alice.signal("bob", {"typing": True}))


class History(Case):
    async def test_history_pages_conversations_count_unread_and_reads_sync(self) -> None:
        node = start_node(self, ["--history", "memory", "--api-key", "k"])
        alice = await self.ready(node.url, client_id="alice")
        bob = await self.ready(node.url, client_id="bob", device="phone")
        bob_laptop = await self.ready(node.url, client_id="bob", device="laptop")
        for n in range(1, 8):
            sent = await within(alice.send("bob", {"n": n}))
            self.assertEqual(sent.cseq, n)

        newest = await within(bob.history("alice", limit=3))
        self.assertEqual([m.cseq for m in newest.messages], [5, 6, 7])
        self.assertTrue(newest.more)
        self.assertEqual(newest.peer, "alice")
        older = await within(bob.history("alice", before=5, limit=10))
        self.assertEqual([m.body["n"] for m in older.messages], [1, 2, 3, 4])
        self.assertFalse(older.more)
        after = await within(bob.history("alice", after=6))
        self.assertEqual([m.cseq for m in after.messages], [7])

        page = await within(bob.conversations())
        self.assertEqual(len(page.items), 1)
        talk = page.items[0]
        self.assertEqual((talk.peer, talk.cseq, talk.read, talk.unread), ("alice", 7, 0, 7))
        self.assertEqual(talk.last.body, {"n": 7})

        # bob reads up to 5 on his phone: his laptop hears it, and so does
        # alice (a two-client conversation).
        laptop_hears = next_event(bob_laptop.on_read)
        alice_hears = next_event(alice.on_read)
        await within(bob.mark_read("alice", upto=5))
        mine = await within(laptop_hears)
        self.assertEqual((mine.by, mine.upto), ("bob", 5))
        theirs = await within(alice_hears)
        self.assertEqual((theirs.by, theirs.peer, theirs.upto), ("bob", "bob", 5))
        after_read = (await within(bob.conversations())).items[0]
        self.assertEqual((after_read.read, after_read.unread), (5, 2))
        self.assertEqual((await within(alice.conversations())).items[0].peer_read, 5)

        # A group's history is for its members only.
        self.assertEqual(api(node, "PUT", "/api/v1/groups/team/members/alice", "k")[0], 204)
        await within(alice.send_group("team", "hello team"))
        team = await within(alice.history(group="team"))
        self.assertEqual([(m.group, m.body) for m in team.messages], [("team", "hello team")])
        with self.assertRaises(sb.NotAllowed):
            await within(bob.history(group="team"))
        # Every message went to bob too (iterated last: history needs none).
        first = await within(next_message(bob))
        self.assertEqual(first.cseq, 1)

    async def test_cseq_is_on_every_copy(self) -> None:
        node = start_node(self, ["--history", "memory"])
        laptop = await self.ready(node.url, client_id="alice", device="laptop")
        phone = await self.ready(node.url, client_id="alice", device="phone")
        bob = await self.ready(node.url, client_id="bob")
        sent = await within(laptop.send("bob", "hi"))
        got, carbon = await within(asyncio.gather(next_message(bob), next_message(phone)))
        self.assertEqual((sent.cseq, got.cseq, carbon.cseq, carbon.carbon), (1, 1, 1, True))


if __name__ == "__main__":
    unittest.main()
