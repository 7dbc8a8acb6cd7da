#!/usr/bin/env python3
"""Turns bench/run.sh's raw figures into the table and the verdict on each target.

usage: report.py RESULTS.jsonl HOLD-SIGNET.json HOLD-NGINX.json STORE.json OUT.json [REDIS.json]
"""
import json
import os
import platform
import subprocess
import sys


def machine():
    cpu = "unknown"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return f"{os.cpu_count()} x {cpu}, {mem:.0f} GiB, Linux {platform.release()}"


def kind_of(r):
    if r.get("e2ee"):
        return "encrypted"
    if not r["stream"]:
        return "json"
    if r.get("delay_us", 0) > 0:
        return "paced"
    return "coalesced" if r.get("write_bytes", 0) > 0 else "burst"


KINDS = [
    ("burst", "stream, 200 events, burst"),
    ("coalesced", "stream, 200 events, coalesced 16 KiB writes"),
    ("paced", "stream, 200 events, paced"),
    ("json", "JSON, 200 tokens"),
]


def main():
    results_path, hold_signet_path, hold_nginx_path, store_path, out_path = sys.argv[1:6]
    rows = [json.loads(l) for l in open(results_path) if l.strip()]
    hold = json.load(open(hold_signet_path))
    hold_nginx = json.load(open(hold_nginx_path))
    store = json.load(open(store_path))
    cell = {(r["label"], kind_of(r), r["concurrency"]): r for r in rows}

    print(f"\nmachine: {machine()}")
    print("one proxy worker pinned to one CPU; load generator and upstream on the others\n")
    print("| traffic | c | direct rps | nginx rps | signet rps | signet/nginx | TTFB p50/p99 ms direct | nginx | signet | signet − direct p99 | CPU µs/req nginx | signet | signet/nginx |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for kind, name in KINDS:
        for c in sorted({r["concurrency"] for r in rows if kind_of(r) == kind}):
            d, n, s = (cell.get((t, kind, c)) for t in ("direct", "nginx", "signet"))
            if not (d and n and s):
                continue
            ttfb = lambda r: f'{r["first_byte_ms"]["p50"]:.2f}/{r["first_byte_ms"]["p99"]:.2f}'
            added = s["first_byte_ms"]["p99"] - d["first_byte_ms"]["p99"]
            print(
                f'| {name} | {c} | {d["requests_per_second"]:.0f} | {n["requests_per_second"]:.0f} '
                f'| {s["requests_per_second"]:.0f} | {s["requests_per_second"] / n["requests_per_second"]:.2f} '
                f'| {ttfb(d)} | {ttfb(n)} | {ttfb(s)} | {added:+.2f} '
                f'| {n["cpu_us_per_request"]:.0f} | {s["cpu_us_per_request"]:.0f} '
                f'| {s["cpu_us_per_request"] / n["cpu_us_per_request"]:.2f} |'
            )
    paced = cell.get(("direct", "paced", 1))
    if paced:
        gap = paced["total_ms"]["p50"] / 200
        print(
            f"\npaced: the upstream sleeps {paced['delay_us']} µs before each event; measured "
            f"direct, c=1: {gap:.2f} ms per event (tokio's 1 ms timer rounds short sleeps up)"
        )
    errors = sum(r["errors"] for r in rows)

    redis = json.load(open(sys.argv[6])) if len(sys.argv) > 6 else None
    if any(r["label"] == "signet-redis" for r in rows):
        print("\nsignature store: memory (default) vs Redis (every record also SET … EX to redis-server)\n")
        print("| traffic | c | memory rps | Redis rps | Redis/memory | total p99 ms memory | Redis | CPU µs/req memory | Redis (signet + redis-server) |")
        print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
        for kind, name in KINDS:
            for c in sorted({r["concurrency"] for r in rows if kind_of(r) == kind}):
                m, r_ = cell.get(("signet", kind, c)), cell.get(("signet-redis", kind, c))
                if not (m and r_):
                    continue
                print(
                    f'| {name} | {c} | {m["requests_per_second"]:.0f} | {r_["requests_per_second"]:.0f} '
                    f'| {r_["requests_per_second"] / m["requests_per_second"]:.2f} '
                    f'| {m["total_ms"]["p99"]:.2f} | {r_["total_ms"]["p99"]:.2f} '
                    f'| {m["cpu_us_per_request"]:.0f} | {r_["cpu_us_per_request"]:.0f} |'
                )
        if redis:
            c = redis["counters"]
            written = sum(v for k, v in c.items() if k.startswith("signet_shared_store_writes_total") and 'result="ok"' in k)
            print(
                f'\nsignet-redis: {sum(v for k, v in c.items() if k.startswith("signet_signed_responses_total")):.0f} signed, '
                f'{written:.0f} written to Redis, '
                f'{c.get("signet_shared_store_dropped_total", 0):.0f} dropped, '
                f'backlog {c.get("signet_shared_store_backlog", 0):.0f}; '
                f'{redis["redis_keys"]} records in Redis at the end (5-minute TTL)'
            )

    encrypted = e2ee_table(cell, rows)

    verdicts = []
    for kind in ("burst", "coalesced"):
        s64, n64 = cell.get(("signet", kind, 64)), cell.get(("nginx", kind, 64))
        if s64 and n64:
            ratio = s64["requests_per_second"] / n64["requests_per_second"]
            verdicts.append((f"streams/s, signet vs nginx ({kind}, c=64)", f"{ratio:.2f}x", ratio >= 0.95, ">= 0.95x"))
    for kind in ("burst", "coalesced", "paced"):
        s_, n_ = cell.get(("signet", kind, 64)), cell.get(("nginx", kind, 64))
        if s_ and n_:
            cpu_ratio = s_["cpu_us_per_request"] / n_["cpu_us_per_request"]
            verdicts.append((
                f"CPU per 200-event stream, signet vs nginx ({kind}, c=64)",
                f'{s_["cpu_us_per_request"]:.0f} µs vs {n_["cpu_us_per_request"]:.0f} µs ({cpu_ratio:.2f}x)',
                cpu_ratio <= 1.0, "<= 1.0x",
            ))
    for c in (1, 64):
        s_, d_ = cell.get(("signet", "paced", c)), cell.get(("direct", "paced", c))
        if s_ and d_:
            added = s_["first_byte_ms"]["p99"] - d_["first_byte_ms"]["p99"]
            verdicts.append((f"TTFB added by signet, p99 (paced, c={c})", f"{added:.3f} ms", added <= 0.5, "<= 0.5 ms"))
    per_stream = hold["bytes_per_stream"]
    verdicts.append((
        "memory per open stream, 1,000 held",
        f'{per_stream / 1024:.1f} KiB (nginx worker: {hold_nginx["bytes_per_stream"] / 1024:.1f} KiB)',
        per_stream <= 16 * 1024, "<= 16 KiB",
    ))
    per_record = store["bytes_per_record"]
    verdicts.append(("memory per stored signature, 1,000,000", f"{per_record:.0f} B", per_record <= 256, "<= 256 B"))
    verdicts.append(("requests that failed", str(errors), errors == 0, "0"))

    print("\n| target | measured | goal | met |\n|---|---|---|---|")
    for name, measured, ok, goal in verdicts:
        print(f"| {name} | {measured} | {goal} | {'yes' if ok else 'NO'} |")

    json.dump(
        {"machine": machine(), "matrix": rows, "hold_signet": hold, "hold_nginx": hold_nginx,
         "store": store, "redis": redis, "e2ee": encrypted,
         "verdicts": [{"target": v[0], "measured": v[1], "met": v[2], "goal": v[3]} for v in verdicts]},
        open(out_path, "w"), indent=1,
    )
    print(f"\nraw figures: {out_path}")


def e2ee_table(cell, rows):
    """Plain vs E2EE-encrypted burst streams through signet: what encryption adds."""
    pairs = []
    for c in sorted({r["concurrency"] for r in rows if kind_of(r) == "encrypted"}):
        p, e = cell.get(("signet", "burst", c)), cell.get(("signet", "encrypted", c))
        if not (p and e):
            continue
        events = e["events"]
        added = e["cpu_us_per_request"] - p["cpu_us_per_request"]
        pairs.append({
            "concurrency": c, "suite": e["e2ee"], "events": events,
            "streams_per_second": {"plain": p["requests_per_second"], "encrypted": e["requests_per_second"]},
            "cpu_us_per_stream": {"plain": p["cpu_us_per_request"], "encrypted": e["cpu_us_per_request"]},
            "cpu_us_per_event": {"plain": round(p["cpu_us_per_request"] / events, 2),
                                 "encrypted": round(e["cpu_us_per_request"] / events, 2)},
            "added_cpu_us_per_stream": round(added, 1),
            "added_cpu_us_per_event": round(added / events, 2),
            "total_ms_p99": {"plain": p["total_ms"]["p99"], "encrypted": e["total_ms"]["p99"]},
        })
    if pairs:
        print(f"\nE2EE v2 ({pairs[0]['suite']}) through signet: the burst stream plain vs encrypted "
              "(the prompt opened, every event's content sealed to the client key)\n")
        print("| c | streams/s plain | encrypted | encrypted/plain | CPU µs/stream plain | encrypted | CPU µs/event plain | encrypted | added µs/stream | added µs/event | total p99 ms plain | encrypted |")
        print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
        for x in pairs:
            rps, cpu, ev, p99 = x["streams_per_second"], x["cpu_us_per_stream"], x["cpu_us_per_event"], x["total_ms_p99"]
            print(
                f'| {x["concurrency"]} | {rps["plain"]:.0f} | {rps["encrypted"]:.0f} | {rps["encrypted"] / rps["plain"]:.2f} '
                f'| {cpu["plain"]:.0f} | {cpu["encrypted"]:.0f} | {ev["plain"]:.2f} | {ev["encrypted"]:.2f} '
                f'| {x["added_cpu_us_per_stream"]:+.0f} | {x["added_cpu_us_per_event"]:+.2f} '
                f'| {p99["plain"]:.2f} | {p99["encrypted"]:.2f} |'
            )
    return pairs


if __name__ == "__main__":
    main()
