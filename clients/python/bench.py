"""What one Python client can send and receive, and its CPU per message.

    target/release/switchboard serve --listen 127.0.0.1:8090 --rate-limit 0 &
    python3 clients/python/bench.py --url ws://127.0.0.1:8090 --messages 20000

Two clients in this process, ``sender`` and ``receiver``, on one node (rate
limit off). ``sender`` keeps ``--window`` sends in flight (each waits for
its ack) until ``--messages`` are acked; ``receiver`` iterates them (in
acks mode confirming lazily). A message counts when it is both acked and
iterated. Reported: messages per second, this process's CPU per message
(``time.process_time``: both clients, the event loop and the library), and,
with ``--profile``, where that time goes, grouped as JSON, the event loop
(asyncio and selectors), websockets, this client, and the rest.

The node's own count of sends (``switchboard_sends_total`` on /metrics,
read before and after) checks the bench's: they must agree.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import json
import pstats
import time
import urllib.request
from collections import defaultdict

import switchboard_client as sb


def node_sends(url: str) -> int:
    """The node's count of sends (every branch), from its /metrics."""
    http = url.replace("ws://", "http://").replace("wss://", "https://").rstrip("/")
    with urllib.request.urlopen(f"{http}/metrics", timeout=5) as response:
        text = response.read().decode()
    return sum(int(float(line.rsplit(" ", 1)[1])) for line in text.splitlines() if line.startswith("switchboard_sends_total{"))


async def run(url: str, messages: int, window: int, acks: bool, size: int) -> tuple[float, float]:
    """Sends ``messages``; returns (seconds, CPU seconds)."""
    body = {"text": "x" * size}
    async with sb.connect(url, client_id="bench-receiver", acks=acks) as receiver, sb.connect(url, client_id="bench-sender", acks=acks) as sender:

        async def receive() -> None:
            got = 0
            async for _ in receiver:
                got += 1
                if got == messages:
                    return

        async def send(count: int) -> None:
            for _ in range(count):
                ack = await sender.send("bench-receiver", body)
                if ack.status != "local":
                    raise RuntimeError(f"not handed over: {ack}")

        cpu, wall = time.process_time(), time.perf_counter()
        reader = asyncio.ensure_future(receive())
        shares = [messages // window + (1 if i < messages % window else 0) for i in range(window)]
        await asyncio.gather(*(send(n) for n in shares))
        await asyncio.wait_for(reader, 60)
        return time.perf_counter() - wall, time.process_time() - cpu


GROUPS = (
    ("json", ("json/", "_json")),
    ("event loop", ("asyncio/", "selectors.py", "<built-in method select", "epoll")),
    ("websockets", ("websockets/",)),
    ("switchboard_client", ("switchboard_client/",)),
)


def breakdown(profile: cProfile.Profile) -> dict[str, float]:
    """Self time by group, as shares of the total."""
    stats = pstats.Stats(profile)
    totals: dict[str, float] = defaultdict(float)
    entries = stats.stats  # type: ignore[attr-defined]
    for (file, _, function), (_, _, self_time, _, _) in entries.items():
        where = f"{file} {function}"
        group = next((name for name, marks in GROUPS if any(m in where for m in marks)), "other (sockets, builtins)")
        totals[group] += self_time
    whole = sum(totals.values()) or 1.0
    return {name: share / whole for name, share in sorted(totals.items(), key=lambda kv: -kv[1])}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--url", default="ws://127.0.0.1:8090")
    parser.add_argument("--messages", type=int, default=20000)
    parser.add_argument("--window", type=int, default=64, help="sends in flight")
    parser.add_argument("--size", type=int, default=64, help="characters of text per body")
    parser.add_argument("--no-acks", action="store_true", help="plain sessions instead of acks mode")
    parser.add_argument("--profile", action="store_true", help="also say where the CPU goes (slows the run)")
    args = parser.parse_args()
    if not 1 <= args.window <= 10_000 or not 1 <= args.messages <= 1_000_000:
        parser.error("--window 1..10000, --messages 1..1000000")
    before = node_sends(args.url)
    profile = cProfile.Profile() if args.profile else None
    if profile is not None:
        profile.enable()
    seconds, cpu = asyncio.run(run(args.url, args.messages, args.window, not args.no_acks, args.size))
    if profile is not None:
        profile.disable()
    counted = node_sends(args.url) - before
    result = {
        "messages": args.messages,
        "window": args.window,
        "acks": not args.no_acks,
        "msgs_per_s": round(args.messages / seconds),
        "cpu_us_per_msg": round(cpu / args.messages * 1e6, 1),
        "node_counted": counted,
    }
    if counted != args.messages:
        raise SystemExit(f"the node counted {counted} sends, the bench {args.messages}: {result}")
    if profile is not None:
        result["cpu_share"] = {k: round(v, 3) for k, v in breakdown(profile).items()}
    print(json.dumps(result))


if __name__ == "__main__":
    main()
