"""The test kit: real switchboard, redis-server and nats-server processes on
free loopback ports, stopped when the test ends; and waiting helpers that
wait on events with a deadline, never a fixed sleep."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import unittest
import urllib.request
from pathlib import Path
from typing import Any, Awaitable, Callable, TypeVar

import switchboard_client as sb

T = TypeVar("T")

REPO = Path(__file__).resolve().parents[3]
PYTHON_CLIENT = REPO / "clients" / "python"

#: The node binary: $SWITCHBOARD_BIN, or the workspace's debug build.
BIN = Path(os.environ.get("SWITCHBOARD_BIN", REPO / "target" / "debug" / "switchboard")).resolve()

#: How long a test waits for any one event.
EVENT_TIMEOUT = 10.0


def which(name: str) -> str:
    """A server binary: the pinned nats-server of scripts/install-deps.sh
    first, then PATH and /usr/sbin (where Debian puts nats-server)."""
    pinned = REPO / "target" / "nats-venv" / "bin" / name
    if pinned.exists():
        return str(pinned)
    found = shutil.which(name, path=os.environ.get("PATH", "") + ":/usr/sbin:/usr/local/sbin")
    if found is None:
        raise RuntimeError(f"{name} not found: run scripts/install-deps.sh")
    return found


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class Process:
    """A child process, killed when its test ends; its output kept for a
    failing test's message."""

    def __init__(self, test: unittest.TestCase, args: list[str], port: int, what: str, env: dict[str, str] | None = None) -> None:
        self.port = port
        self.what = what
        self.log_path = Path(os.environ.get("TMPDIR", "/tmp")) / f"sb-py-{what}-{port}-{os.getpid()}.log"
        self._log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=self._log, stderr=subprocess.STDOUT, env=env)
        test.addCleanup(self.kill)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-20000:]

    def wait_port(self) -> None:
        deadline = time.monotonic() + EVENT_TIMEOUT
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.what} exited ({self.proc.returncode}) before opening port {self.port}: {self.log()}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return
            except OSError:
                time.sleep(0.02)
        raise RuntimeError(f"{self.what} did not open port {self.port}: {self.log()}")

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self._log.close()
        self.log_path.unlink(missing_ok=True)

    async def drain(self) -> None:
        """SIGTERM: the node drains (its sessions are passed on, 1001)."""
        self.proc.send_signal(signal.SIGTERM)
        await asyncio.get_running_loop().run_in_executor(None, self.proc.wait)


class Node(Process):
    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    @property
    def http(self) -> str:
        return f"http://127.0.0.1:{self.port}"


def start_redis(test: unittest.TestCase) -> str:
    port = free_port()
    redis = Process(test, [which("redis-server"), "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"], port, "redis")
    redis.wait_port()
    return f"redis://127.0.0.1:{port}"


def start_nats(test: unittest.TestCase) -> Process:
    port = free_port()
    nats = Process(test, [which("nats-server"), "-a", "127.0.0.1", "-p", str(port)], port, "nats")
    nats.wait_port()
    return nats


def start_node(test: unittest.TestCase, flags: list[str] | None = None, port: int | None = None) -> Node:
    """A node on a free port (or ``port``, to come back on an address)."""
    if not BIN.exists():
        raise RuntimeError(f"{BIN} not found: run `cargo build` first (or set SWITCHBOARD_BIN)")
    port = port or free_port()
    flags = list(flags or [])
    if "--log" not in flags:
        flags += ["--log", os.environ.get("SB_TEST_LOG", "warn")]
    node = Node(test, [str(BIN), "serve", "--listen", f"127.0.0.1:{port}", *flags], port, "switchboard")
    node.wait_port()
    return node


def start_python(test: unittest.TestCase, script: Path, args: list[str], port: int, what: str) -> Process:
    """An example of this package, run with this interpreter."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return Process(test, [sys.executable, str(script), *args], port, what, env)


def api(node: Node, method: str, path: str, key: str, body: Any = None) -> tuple[int, str]:
    """An HTTP call to the node's API."""
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(f"{node.http}{path}", data=data, method=method, headers={"authorization": f"Bearer {key}", "content-type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=EVENT_TIMEOUT) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


def token(secret: str, sub: str, seconds: int = 3600) -> str:
    """An HS256 JWT for ``sub``, valid ``seconds``."""

    def b64(raw: bytes) -> str:
        return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()

    head = b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode()) + "." + b64(json.dumps({"sub": sub, "exp": int(time.time()) + seconds}).encode())
    signature = hmac.new(secret.encode(), head.encode(), hashlib.sha256).digest()
    return f"{head}.{b64(signature)}"


async def within(awaitable: Awaitable[T], what: str = "timed out") -> T:
    """``awaitable``'s result, or a failure after EVENT_TIMEOUT."""
    try:
        return await asyncio.wait_for(awaitable, EVENT_TIMEOUT)
    except asyncio.TimeoutError:
        raise AssertionError(what) from None


async def eventually(what: str, check: Callable[[], bool]) -> None:
    """Waits until ``check()`` holds (for state with no event to wait on)."""
    deadline = time.monotonic() + EVENT_TIMEOUT
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting until {what}")
        await asyncio.sleep(0.01)


def next_event(register: Callable[[Callable[[T], None]], Callable[[], None]], accept: Callable[[T], bool] = lambda _: True) -> asyncio.Future[T]:
    """The next event a client's ``on_…`` (``register``) reports that
    ``accept`` takes."""
    future: asyncio.Future[T] = asyncio.get_running_loop().create_future()

    def listener(value: T) -> None:
        if not future.done() and accept(value):
            future.set_result(value)
            stop()

    stop = register(listener)
    return future


async def next_message(client: sb.Client) -> sb.Message:
    async for message in client:
        return message
    raise AssertionError("the client closed before a message came")


class Case(unittest.IsolatedAsyncioTestCase):
    """A test with clients closed at its end."""

    async def asyncSetUp(self) -> None:
        # The test loop runs in debug mode; starting a server process blocks
        # it for a moment by design: not a slow callback worth a warning.
        asyncio.get_running_loop().slow_callback_duration = 2.0

    async def client(self, url: str, **options: Any) -> sb.Client:
        """A started client (not waited for), closed when the test ends."""
        client = sb.connect(url, **options)
        client.start()
        self.addAsyncCleanup(client.close)
        return client

    async def ready(self, url: str, **options: Any) -> sb.Client:
        """A client with an open session."""
        client = await self.client(url, **options)
        await within(client.ready(), f"no session for {options}")
        return client
