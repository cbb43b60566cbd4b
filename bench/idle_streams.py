#!/usr/bin/env python3
"""Memory per idle stream: RSS of an embedded-mode gateway before and after N idle
`GET /orders/stream` connections.

    python3 bench/idle_streams.py [--streams 2000] [--binary target/release/orders-gateway]
"""
import argparse
import http.client
import json
import os
import socket
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--streams", type=int, default=2000)
    ap.add_argument("--binary", default=os.path.join(ROOT, "target/release/orders-gateway"))
    args = ap.parse_args()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {"PATH": os.environ["PATH"], "LISTEN_ADDR": f"127.0.0.1:{port}", "RUST_LOG": "warn"}
    gateway = subprocess.Popen([args.binary], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(300):
            try:
                c = http.client.HTTPConnection("127.0.0.1", port, timeout=1)
                c.request("GET", "/readyz")
                if c.getresponse().status == 200:
                    break
            except OSError:
                pass
            time.sleep(0.01)
        time.sleep(1)
        before = rss_kib(gateway.pid)
        conns = []
        for _ in range(args.streams):
            s = socket.create_connection(("127.0.0.1", port))
            s.sendall(b"GET /orders/stream HTTP/1.1\r\nHost: x\r\nAccept: text/event-stream\r\n\r\n")
            conns.append(s)
        for s in conns:
            s.settimeout(5)
            if not s.recv(4096).startswith(b"HTTP/1.1 200"):
                sys.exit("a stream was refused")
        time.sleep(2)
        after = rss_kib(gateway.pid)
        print(json.dumps({
            "streams": args.streams,
            "rss_before_kib": before,
            "rss_after_kib": after,
            "bytes_per_idle_stream": round((after - before) * 1024 / args.streams),
        }, indent=2))
        for s in conns:
            s.close()
    finally:
        gateway.kill()


if __name__ == "__main__":
    main()
