"""The examples and the README run as they stand, against a real node."""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
import tempfile
import unittest
import urllib.request
from pathlib import Path

import switchboard_client as sb

from support import PYTHON_CLIENT, Case, free_port, next_event, next_message, start_node, start_python, within

EXAMPLES = PYTHON_CLIENT / "examples"
README = PYTHON_CLIENT / "README.md"


def python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", README.read_text(), re.S)


class Examples(Case):
    async def test_the_readme_example_runs_as_pasted(self) -> None:
        node = start_node(self)
        script = python_blocks()[0]
        with tempfile.TemporaryDirectory() as dir:
            path = Path(dir) / "example.py"
            path.write_text(script)
            run = await asyncio.create_subprocess_exec(
                sys.executable,
                str(path),
                env={**os.environ, "SWITCHBOARD_URL": node.url},
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
            )
            out, _ = await within(run.communicate())
        self.assertEqual(run.returncode, 0, out.decode())
        self.assertEqual(out.decode().splitlines(), ["ack: local", "alice: hello", "outcome: delivered"])

    async def test_the_echo_bot_answers(self) -> None:
        node = start_node(self, ["--api-key", "k"])
        alice = await self.ready(node.url, client_id="alice")
        online = next_event(alice.on_presence, lambda p: p.state == "online")
        await within(alice.watch(["echo"]))
        bot = start_python(self, EXAMPLES / "echo_bot.py", ["--url", node.url, "--as", "echo"], node.port, "echo-bot")
        await within(online, f"the bot did not come online: {bot.log()}")
        sent = await within(alice.send("echo", {"text": "anyone there?"}))
        self.assertEqual(sent.status, "local")
        answer = await within(next_message(alice))
        self.assertEqual((answer.sender, answer.body), ("echo", {"echo": {"text": "anyone there?"}}))
        # SIGTERM: it leaves cleanly (a client close, not a dropped session).
        offline = next_event(alice.on_presence, lambda p: p.state == "offline")
        await bot.drain()
        self.assertEqual(bot.proc.returncode, 0, bot.log())
        self.assertIn("echo bot: bye", bot.log())
        await within(offline)

    async def test_the_moderation_service_refuses_strikes_and_bans(self) -> None:
        secret = "moderation-secret"
        hook_port = free_port()
        node = start_node(self, ["--hook-url", f"http://127.0.0.1:{hook_port}/hook", "--hook-secret", secret, "--presence-coalesce-ms", "50"])
        moderation = start_python(
            self,
            EXAMPLES / "moderation.py",
            ["--listen", f"127.0.0.1:{hook_port}", "--secret", secret, "--url", node.url, "--block", "spam,scam", "--admin", "ops"],
            hook_port,
            "moderation",
        )
        # Until the backend listens, the node answers 503 hook_unavailable:
        # the client retries.
        ops = await self.ready(node.url, client_id="ops", initial_delay=0.05, max_delay=0.2)
        online = next_event(ops.on_presence, lambda p: p.state == "online")
        await within(ops.watch(["moderator"]))
        await within(online, f"the moderator did not come online: {moderation.log()}")

        mallory = await self.ready(node.url, client_id="mallory")
        bob = await self.ready(node.url, client_id="bob")
        fine = await within(mallory.send("bob", {"text": "hello"}))
        self.assertEqual(fine.status, "local")
        self.assertEqual((await within(next_message(bob))).body, {"text": "hello"})
        notices = []
        for strike in (1, 2, 3):
            with self.assertRaises(sb.Rejected) as held:
                await within(mallory.send("bob", {"text": f"cheap SPAM #{strike}"}))
            self.assertEqual(held.exception.reason, "moderated")
            notices.append((await within(next_message(mallory))).body)
        self.assertEqual([n["strikes"] for n in notices], [1, 2, 3])
        self.assertEqual([n["banned"] for n in notices], [False, False, True])

        # Banned: the next connect is refused for good.
        await mallory.close()
        with self.assertRaises(sb.Refused) as refused:
            async with sb.connect(node.url, client_id="mallory"):
                pass
        self.assertEqual((refused.exception.status, refused.exception.code), (403, "banned"))

        # An admin lifts it; others may not.
        await within(bob.send("moderator", {"unban": "mallory"}))
        self.assertIn("error", (await within(next_message(bob))).body)
        await within(ops.send("moderator", {"unban": "mallory"}))
        self.assertEqual((await within(next_message(ops))).body, {"client": "mallory", "banned": False, "strikes": 0})
        mallory = await self.ready(node.url, client_id="mallory")
        # Bob never saw a refused message: the next from mallory is the
        # first since "hello" (a sender's messages keep their order).
        await within(mallory.send("bob", {"text": "sorry"}))
        self.assertEqual((await within(next_message(bob))).body, {"text": "sorry"})

        # A call without the right signature is refused by the backend.
        request = urllib.request.Request(f"http://127.0.0.1:{hook_port}/hook", data=b'{"hook":"connect","client_id":"x"}', method="POST")
        with self.assertRaises(urllib.error.HTTPError) as unsigned:
            urllib.request.urlopen(request, timeout=5)
        self.assertEqual(unsigned.exception.code, 401)


class TypeChecked(unittest.TestCase):
    def test_the_readme_blocks_pass_mypy_strict(self) -> None:
        blocks = python_blocks()
        self.assertGreaterEqual(len(blocks), 2)
        with tempfile.TemporaryDirectory() as dir:
            for i, block in enumerate(blocks):
                (Path(dir) / f"block{i}.py").write_text(block)
            run = subprocess.run([sys.executable, "-m", "mypy", "--strict", "--no-incremental", dir], capture_output=True, text=True)
        self.assertEqual(run.returncode, 0, run.stdout + run.stderr)


if __name__ == "__main__":
    unittest.main()
