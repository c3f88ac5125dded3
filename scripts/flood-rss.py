#!/usr/bin/env python3
"""Flood one client that does not read, and report the receiving node's RSS.

Starts redis-server, nats-server and two nodes of the given binary on free
loopback ports; "bob" connects to node-2 and never reads; "alice" on node-1
sends 64 KiB messages to bob as fast as node-1 acks them, for a fixed
number of sends or seconds. Prints node-2's resident memory before, at its
peak (VmHWM) and after. Measures what one stuck client can make a node
buffer (issue 11: the outbound queue bounded in bytes).

    pip install websockets
    scripts/flood-rss.py [--bin target/release/switchboard] [--sends 3000]
"""

import argparse
import asyncio
import json
import os
import shutil
import socket
import subprocess
import tempfile
import time

import websockets


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def find(name):
    return shutil.which(name) or f"/usr/sbin/{name}"


def wait_port(port, timeout=10):
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise SystemExit(f"nothing listens on {port}")


def status_kib(pid, field):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


async def flood(args, url_a, url_b):
    bob = await websockets.connect(f"{url_b}/ws?client_id=bob", max_size=None)
    await bob.recv()  # the welcome; bob reads nothing after it
    # Stop reading bob's socket at the TCP level too.
    bob.transport.pause_reading()
    alice = await websockets.connect(f"{url_a}/ws?client_id=alice", max_size=None)
    await alice.recv()
    body = "x" * 60_000
    acks = {"local": 0, "remote": 0, "offline": 0}
    deadline = time.time() + args.seconds
    for i in range(args.sends):
        if time.time() > deadline:
            break
        await alice.send(json.dumps({"type": "send", "to": "bob", "body": body, "id": str(i)}))
        while True:
            frame = json.loads(await alice.recv())
            if frame["type"] == "ack":
                acks[frame["status"]] += 1
                break
    await alice.close()
    return acks


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bin", default="target/release/switchboard")
    parser.add_argument("--sends", type=int, default=3000)
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument("--extra", default="", help="extra node flags, space-separated")
    args = parser.parse_args()

    procs = []
    tmp = tempfile.mkdtemp(prefix="flood-rss-")
    try:
        rp, np_ = free_port(), free_port()
        procs.append(subprocess.Popen(
            [find("redis-server"), "--port", str(rp), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", tmp], stdout=subprocess.DEVNULL))
        procs.append(subprocess.Popen(
            [find("nats-server"), "-a", "127.0.0.1", "-p", str(np_)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        wait_port(rp)
        wait_port(np_)
        ports = [free_port(), free_port()]
        nodes = []
        for i, port in enumerate(ports):
            node = subprocess.Popen(
                [args.bin, "serve", "--listen", f"127.0.0.1:{port}", "--node-id", f"node-{i + 1}",
                 "--redis-url", f"redis://127.0.0.1:{rp}", "--nats-url", f"nats://127.0.0.1:{np_}",
                 "--rate-limit", "0", "--log", "warn", *args.extra.split()],
                env={**os.environ, "SWITCHBOARD_LOG": "warn"})
            procs.append(node)
            nodes.append(node)
            wait_port(port)
        pid = nodes[1].pid
        before = status_kib(pid, "VmRSS")
        acks = asyncio.run(flood(args, f"ws://127.0.0.1:{ports[0]}", f"ws://127.0.0.1:{ports[1]}"))
        peak = status_kib(pid, "VmHWM")
        time.sleep(1)
        after = status_kib(pid, "VmRSS")
        print(f"acks: {acks}")
        print(f"node-2 RSS: before {before / 1024:.1f} MiB, peak {peak / 1024:.1f} MiB "
              f"(+{(peak - before) / 1024:.1f}), after {after / 1024:.1f} MiB")
    finally:
        for p in reversed(procs):
            p.kill()
            p.wait()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
