#!/usr/bin/env python3
"""Start-to-ready time and sequential POST /orders latency, against a local Tansu broker.

    python3 bench/sequential.py [--orders 500] [--binary target/release/orders-gateway]

Starts a Tansu broker and the gateway on free loopback ports, measures the time from
starting the gateway to the first 200 from /readyz, then sends N orders one after the other
on one keep-alive connection and prints p50/p90/p99/max. Every answer must be a 202.
Also measures start-to-ready of the embedded broker mode. Standard library only.
"""
import argparse
import http.client
import json
import os
import socket
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port, timeout=20):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.01)
    sys.exit(f"nothing listens on {port}")


def start_gateway(binary, port, env):
    env = {"PATH": os.environ["PATH"], "LISTEN_ADDR": f"127.0.0.1:{port}", "RUST_LOG": "warn", **env}
    started = time.monotonic()
    proc = subprocess.Popen([binary], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = started + 30
    while time.monotonic() < deadline:
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=1)
            conn.request("GET", "/readyz")
            if conn.getresponse().status == 200:
                return proc, time.monotonic() - started
        except OSError:
            pass
        time.sleep(0.005)
    proc.kill()
    sys.exit("gateway not ready within 30 s")


def pct(values, p):
    values = sorted(values)
    return values[min(len(values) - 1, int(round(p / 100 * (len(values) - 1))))]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--orders", type=int, default=500)
    ap.add_argument("--binary", default=os.path.join(ROOT, "target/release/orders-gateway"))
    args = ap.parse_args()
    tansu = subprocess.run(["bash", os.path.join(ROOT, "scripts/install-tansu.sh")],
                           capture_output=True, text=True, check=True).stdout.strip()

    broker_port = free_port()
    url = f"tcp://127.0.0.1:{broker_port}"
    broker = subprocess.Popen([tansu, "broker", "--listener-url", url, "--advertised-listener-url", url],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    procs = [broker]
    try:
        wait_port(broker_port)
        port = free_port()
        gateway, ready = start_gateway(args.binary, port, {"KAFKA_BOOTSTRAP_SERVERS": f"127.0.0.1:{broker_port}"})
        procs.append(gateway)
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        body = json.dumps({"user": "lara", "item": "frozen yogurt", "quantity": 10})
        latencies = []
        for _ in range(args.orders):
            t = time.perf_counter()
            conn.request("POST", "/orders", body, {"content-type": "application/json"})
            response = conn.getresponse()
            response.read()
            latencies.append((time.perf_counter() - t) * 1000)
            if response.status != 202:
                sys.exit(f"POST answered {response.status}")
        embedded_port = free_port()
        embedded, embedded_ready = start_gateway(args.binary, embedded_port, {})
        procs.append(embedded)
        print(json.dumps({
            "orders": args.orders,
            "ready_seconds_tansu": round(ready, 3),
            "ready_seconds_embedded": round(embedded_ready, 3),
            "post_ms": {p: round(pct(latencies, p), 3) for p in (50, 90, 99)}
                       | {"max": round(max(latencies), 3), "mean": round(statistics.mean(latencies), 3)},
        }, indent=2))
    finally:
        for p in procs:
            p.kill()


if __name__ == "__main__":
    main()
