"""Hostile clients for scripts/soak: the adversarial probe's cases, in a loop, for a while.

Each case expects a bounded, documented answer (or a closed connection); the script counts
answers by status and fails if one ever waits longer than its bound or gets a 5xx.
"""
import argparse
import json
import socket
import sys
import threading
import time

parser = argparse.ArgumentParser()
parser.add_argument("--port", type=int, required=True)
parser.add_argument("--seconds", type=float, default=60)
parser.add_argument("--workers", type=int, default=4)
args = parser.parse_args()

HOST = "127.0.0.1"
statuses: dict = {}
problems: list = []
lock = threading.Lock()


def request(raw: bytes, wait: float = 5.0, trickle: bytes = b"", pause: float = 0.0) -> int:
    """Sends `raw` (then `trickle` after `pause`), returns the status, 0 if closed first."""
    with socket.create_connection((HOST, args.port), timeout=wait) as s:
        s.sendall(raw)
        if trickle:
            time.sleep(pause)
            try:
                s.sendall(trickle)
            except OSError:
                pass
        data = b""
        try:
            while b"\r\n" not in data:
                chunk = s.recv(4096)
                if not chunk:
                    return 0
                data += chunk
        except (ConnectionResetError, socket.timeout) as e:
            if isinstance(e, socket.timeout):
                raise
            return 0
        return int(data.split(b" ", 2)[1])


def post(path: str, body: bytes, headers: str = "content-type: application/json\r\n") -> bytes:
    return (f"POST {path} HTTP/1.1\r\nhost: soak\r\nconnection: close\r\n{headers}"
            f"content-length: {len(body)}\r\n\r\n").encode() + body


many_fields = json.dumps({f"f{i}": i for i in range(100_000)}).encode()
CASES = {
    "unknown_fields": lambda: request(post("/v1/transactions/score", many_fields)),
    "declared_too_long": lambda: request(
        b"POST /v1/transactions/score HTTP/1.1\r\nhost: soak\r\ncontent-type: application/json\r\n"
        b"content-length: 7000000\r\n\r\n{}"),
    "short_body": lambda: request(
        b"POST /v1/transactions/score HTTP/1.1\r\nhost: soak\r\ncontent-type: application/json\r\n"
        b"content-length: 100\r\n\r\n{\"a\"", wait=15.0),
    "duplicate_keys": lambda: request(post("/v1/transactions/score",
                                           b'{"transaction_id": "a", "transaction_id": "b"}')),
    "latin1": lambda: request(post("/v1/transactions/score", b'{"a": 1}',
                                   "content-type: application/json; charset=latin1\r\n")),
    "two_keys": lambda: request(post("/v1/transactions/score", b"{}",
                                     "content-type: application/json\r\nx-api-key: a\r\nx-api-key: b\r\n")),
    "bad_path": lambda: request(post("/endpoints/%ff/invocations", b"1,2", "content-type: text/csv\r\n")),
    "wrong_method": lambda: request(b"GET /v1/transactions/score HTTP/1.1\r\nhost: soak\r\nconnection: close\r\n\r\n"),
    "batch_garbage": lambda: request(post("/v1/transactions/score-batch",
                                          json.dumps({"transactions": [{"x": i} for i in range(1000)]}).encode())),
}

# Idle HTTP/2 connections (preface and an empty SETTINGS frame, then nothing), held open.
H2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + b"\x00\x00\x00\x04\x00\x00\x00\x00\x00"


def idle_h2(deadline: float) -> None:
    while time.time() < deadline:
        try:
            with socket.create_connection((HOST, args.port), timeout=120) as s:
                s.sendall(H2_PREFACE)
                while s.recv(4096):
                    pass
        except OSError:
            pass


def worker(deadline: float) -> None:
    names = list(CASES)
    i = 0
    while time.time() < deadline:
        name = names[i % len(names)]
        i += 1
        started = time.time()
        try:
            status = CASES[name]()
        except socket.timeout:
            status = -1
        except OSError:
            status = 0
        took = time.time() - started
        with lock:
            statuses.setdefault(name, {}).setdefault(status, 0)
            statuses[name][status] += 1
            if status == -1 or status >= 500 and status != 503:
                problems.append(f"{name}: status {status} after {took:.1f} s")


deadline = time.time() + args.seconds
threads = [threading.Thread(target=worker, args=(deadline,)) for _ in range(args.workers)]
threads += [threading.Thread(target=idle_h2, args=(deadline,), daemon=True) for _ in range(20)]
for t in threads:
    t.start()
for t in threads[: args.workers]:
    t.join()
print(json.dumps({"statuses": statuses, "problems": problems[:20]}, indent=1))
sys.exit(1 if problems else 0)
