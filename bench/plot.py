#!/usr/bin/env python3
"""Draws the harness's JSON report as one PNG: python3 bench/plot.py REPORT.json OUT.png"""
import json
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def produce(ax_rate, ax_lat, report):
    rows = report.get("produce", {}).get("concurrency", [])
    if not rows:
        return
    labels = [str(r["concurrency"]) for r in rows]
    x = range(len(rows))
    w = 0.27
    for i, (key, name) in enumerate([("healthz", "GET /healthz"), ("post", "POST /orders"), ("raw", "raw rdkafka")]):
        ax_rate.bar([p + (i - 1) * w for p in x], [r[key]["per_second"] for r in rows], w, label=name)
    ax_rate.set_xticks(list(x), labels)
    ax_rate.set_xlabel("concurrency")
    ax_rate.set_ylabel("requests / s")
    ax_rate.set_title("Produce path: throughput and its two limits")
    ax_rate.legend(fontsize=8)
    for i, (q, name) in enumerate([("p50_ms", "p50"), ("p99_ms", "p99"), ("p999_ms", "p99.9")]):
        ax_lat.bar([p + (i - 1) * w for p in x], [r["post"]["latency"][q] for r in rows], w, label=name)
    fixed = report["produce"].get("fixed_rate")
    title = "POST /orders latency"
    if fixed:
        lat = fixed["post"]["latency"]
        title += f"  (at {fixed['rate']}/s: p50 {lat['p50_ms']} / p99 {lat['p99_ms']} ms)"
    ax_lat.set_xticks(list(x), labels)
    ax_lat.set_xlabel("concurrency")
    ax_lat.set_ylabel("ms")
    ax_lat.set_title(title, fontsize=10)
    ax_lat.legend(fontsize=8)


def fanout(ax, report):
    runs = report.get("fanout", [])
    if not runs:
        return
    labels = [f"{r['clients']:,} x {r['rate']}/s"
              + (f"\nfetch wait {r['feed_fetch_wait_ms']} ms*" if r.get("feed_fetch_wait_ms") else "")
              for r in runs]
    x = range(len(runs))
    w = 0.4
    ax.bar([p - w / 2 for p in x], [r["e2e_latency"]["p50_ms"] for r in runs], w, label="e2e p50")
    ax.bar([p + w / 2 for p in x], [r["e2e_latency"]["p99_ms"] for r in runs], w, label="e2e p99")
    ax.set_yscale("log")
    ax.set_xticks(list(x), labels, fontsize=8)
    ax.set_ylabel("ms (log)")
    ax.set_title("Fan-out: POST 202 -> event at every client")
    for p, r in zip(x, runs):
        mark = "all" if r["every_order_to_every_client"] else f"{r['complete_clients']}/{r['clients']}"
        ax.annotate(f"{mark}\n{r['gateway_rss_peak_mib']} MiB", (p, max(r["e2e_latency"]["p99_ms"], 0.01)),
                    ha="center", va="bottom", fontsize=7)
    ax.legend(fontsize=8)


def summary(ax, report):
    ax.axis("off")
    lines = []
    c = report.get("catchup")
    if c:
        lines.append(f"Catch-up {c['behind']:,} behind: {c['events_per_second']:,.0f} events/s")
    s = report.get("startup")
    if s:
        lines.append(f"Start to ready: live {s['live_broker_seconds']} s")
        lines.append(f"                embedded {s['embedded_seconds']} s")
    lines.append("")
    for t in report.get("targets", []):
        lines.append(f"{'ok ' if t['met'] else 'MISS'} {t['target']}: {t['value']} ({t['goal']})")
    m = report.get("machine", {})
    lines.append("")
    lines.append(f"{m.get('cpus')} cores, {m.get('memory_gib')} GiB; all on one machine")
    ax.text(0, 1, "\n".join(lines), va="top", family="monospace", fontsize=8)


def soak(report, out):
    samples = report["samples"]
    fig, ax = plt.subplots(figsize=(9, 4))
    ax.plot([s["t"] for s in samples], [s["rss_mib"] for s in samples], marker=".")
    ax.set_xlabel("seconds")
    ax.set_ylabel("gateway RSS (MiB)")
    ax.set_title(f"Soak: {report['rate']} orders/s, {report['streams']} streams ({report['slow']} slow)")
    fig.tight_layout()
    fig.savefig(out, dpi=110)


def main():
    report = json.load(open(sys.argv[1]))
    if "samples" in report:
        return soak(report, sys.argv[2])
    fig, axes = plt.subplots(2, 2, figsize=(13, 9))
    produce(axes[0][0], axes[0][1], report)
    fanout(axes[1][0], report)
    summary(axes[1][1], report)
    fig.suptitle(f"orders-gateway, {report.get('mode')} run", fontsize=12)
    fig.tight_layout()
    fig.savefig(sys.argv[2], dpi=110)


if __name__ == "__main__":
    main()
