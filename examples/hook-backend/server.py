#!/usr/bin/env python3
"""An example backend for Switchboard's hooks (docs/protocol.md, "Backend hooks").

It checks every call's signature, bans one client name at connect time,
masks one word in messages (a rewrite) and refuses messages with another
(moderation). Python's standard library only:

    python3 examples/hook-backend/server.py --port 9100 --secret s3cr3t \\
        --ban mallory --mask darn --refuse spam
    switchboard --hook-url http://127.0.0.1:9100/hook --hook-secret s3cr3t

The tests also use its knobs for bad days: --jitter-ms (random delays),
--fail status|timeout|garbage, and --tls-cert/--tls-key (https).
GET /calls answers what it saw: the connects' claims, counts, and how many
calls came with a bad signature.
"""

import argparse
import hashlib
import hmac
import json
import random
import ssl
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

args = None
seen = {"connects": [], "sends": 0, "bad_signatures": 0}
lock = threading.Lock()


def rewrite(value, word):
    """`value` with `word` masked in every string, and whether any was."""
    if isinstance(value, str):
        masked = value.replace(word, "*" * len(word))
        return masked, masked != value
    if isinstance(value, list):
        out = [rewrite(v, word) for v in value]
        return [v for v, _ in out], any(c for _, c in out)
    if isinstance(value, dict):
        out = {k: rewrite(v, word) for k, v in value.items()}
        return {k: v for k, (v, _) in out.items()}, any(c for _, c in out.values())
    return value, False


def mentions(value, word):
    return word in json.dumps(value)


def decide(call):
    """The answer to one hook call."""
    if call.get("hook") == "connect":
        with lock:
            seen["connects"].append({"client_id": call["client_id"], "claims": call.get("claims")})
        if args.ban and call["client_id"] == args.ban:
            return {"allow": False, "status": 403, "error": "banned",
                    "message": f"{args.ban} may not connect"}
        return {"allow": True}
    with lock:
        seen["sends"] += 1
    body = call.get("body")
    if args.refuse and mentions(body, args.refuse):
        return {"allow": False, "error": "moderated", "message": f"no {args.refuse} here"}
    if args.mask:
        masked, changed = rewrite(body, args.mask)
        if changed:
            return {"allow": True, "body": masked}
    return {"allow": True}


class Hook(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # kept-alive connections, as the node expects

    def log_message(self, *_):
        pass

    def answer(self, status, payload):
        body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        with lock:
            self.answer(200, seen)

    def do_POST(self):
        raw = self.rfile.read(int(self.headers.get("content-length", 0)))
        expected = "sha256=" + hmac.new(args.secret.encode(), raw, hashlib.sha256).hexdigest()
        if not hmac.compare_digest(expected, self.headers.get("x-switchboard-signature", "")):
            with lock:
                seen["bad_signatures"] += 1
            return self.answer(401, {"error": "bad signature"})
        if args.jitter_ms:
            time.sleep(random.uniform(0, args.jitter_ms) / 1000)
        if args.fail == "status":
            return self.answer(500, {"error": "down"})
        if args.fail == "timeout":
            time.sleep(30)
        if args.fail == "garbage":
            return self.answer(200, b"this is not JSON")
        self.answer(200, decide(json.loads(raw)))


def main():
    global args
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--port", type=int, default=9100)
    parser.add_argument("--secret", required=True)
    parser.add_argument("--ban", help="a client id refused at connect (403 banned)")
    parser.add_argument("--mask", help="a word masked in messages (rewritten)")
    parser.add_argument("--refuse", help="a word whose messages are refused (moderated)")
    parser.add_argument("--jitter-ms", type=float, default=0)
    parser.add_argument("--fail", choices=["status", "timeout", "garbage"])
    parser.add_argument("--tls-cert")
    parser.add_argument("--tls-key")
    args = parser.parse_args()
    server = ThreadingHTTPServer(("127.0.0.1", args.port), Hook)
    server.daemon_threads = True
    if args.tls_cert:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(args.tls_cert, args.tls_key)
        server.socket = context.wrap_socket(server.socket, server_side=True)
    print(f"hook backend on {'https' if args.tls_cert else 'http'}://127.0.0.1:{args.port}/hook", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
