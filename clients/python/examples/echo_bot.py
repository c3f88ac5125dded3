"""An echo bot: answers every message sent to it with the same body.

    python3 clients/python/examples/echo_bot.py --url ws://127.0.0.1:8080 --as echo

then, from a chat page or `switchboard chat --as alice`, send to `echo`.
With authentication on, give a token instead: `--token <JWT with sub echo>`.
It stays connected (reconnecting and resuming by itself) until Ctrl-C or
SIGTERM, and leaves cleanly.
"""

from __future__ import annotations

import argparse
import asyncio
import signal

import switchboard_client as sb


async def echo(url: str, name: str, token: str | None) -> None:
    async with sb.connect(url, client_id=None if token else name, token=token) as bot:
        assert bot.welcome is not None
        print(f"echo bot {bot.welcome.client_id} on node {bot.welcome.node}", flush=True)
        async for message in bot:
            if message.carbon:
                continue  # a copy of what this bot sent from another device
            body = {"echo": message.body}
            try:
                if message.group is not None:
                    await bot.send_group(message.group, body)
                else:
                    await bot.send(message.sender, body)
            except sb.RateLimited:
                print(f"over the rate: no echo to {message.sender}", flush=True)
            except sb.ConnectionLost:
                pass  # the node went away before the ack; the client reconnects


async def main() -> None:
    parser = argparse.ArgumentParser(description="Answers every message with the same body.")
    parser.add_argument("--url", default="ws://127.0.0.1:8080", help="the node")
    parser.add_argument("--as", dest="name", default="echo", help="the bot's client id (auth off)")
    parser.add_argument("--token", help="a JWT, when the node checks tokens")
    args = parser.parse_args()
    bot = asyncio.ensure_future(echo(args.url, args.name, args.token))
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, bot.cancel)
    try:
        await bot
    except asyncio.CancelledError:
        print("echo bot: bye", flush=True)


if __name__ == "__main__":
    asyncio.run(main())
