#!/usr/bin/env python3
"""Start-up time, memory and an accurate count of `healporium serve` on a large database.

Usage: benches/startup.py [--patients N] [--runs R] [--binary PATH] [--db PATH]

1. Builds (once, kept) a SQLite database of N Patients (default 100,000): a loader server
   (`--insecure-no-auth --audit off`, on a port of its own) takes transaction Bundles of 1,000.
2. Starts `healporium serve` with its defaults (authorization on, auditing on) R times on it
   and measures from exec to the first 200 of GET /health/ready and of GET /fhir/metadata.
3. Reports the server's resident memory then, the time of
   `Patient?_summary=count&_total=accurate` and of `Patient?family=F7&_total=accurate`
   (an insecure server on the same file, to count without a token), and its RSS after.

Needs the release binary (`cargo build --release`). Prints a Markdown table.
"""

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get(url, timeout=5.0):
    with urllib.request.urlopen(url, timeout=timeout) as r:
        return r.status, r.read()


def post(url, body):
    req = urllib.request.Request(
        url, data=body, headers={"Content-Type": "application/fhir+json"}, method="POST"
    )
    with urllib.request.urlopen(req, timeout=600) as r:
        return r.status, r.read()


def rss_kb(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def spawn(binary, db, port, extra, cwd):
    return subprocess.Popen(
        [binary, "serve", "--listen", f"127.0.0.1:{port}", "--database-url", f"sqlite:{db}"]
        + extra,
        cwd=cwd,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={k: v for k, v in os.environ.items() if not k.startswith("HEALPORIUM_")}
        | {"RUST_LOG": "warn"},
    )


def wait_ready(port, deadline_s=120):
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        try:
            status, _ = get(f"http://127.0.0.1:{port}/health/ready", timeout=1)
            if status == 200:
                return
        except Exception:
            time.sleep(0.002)
    raise SystemExit("server did not start")


def build(binary, db, patients, cwd):
    port = free_port()
    p = spawn(binary, db, port, ["--insecure-no-auth", "--audit", "off"], cwd)
    try:
        wait_ready(port)
        start = time.monotonic()
        done = 0
        while done < patients:
            n = min(1000, patients - done)
            entries = [
                {
                    "resource": {
                        "resourceType": "Patient",
                        "name": [{"family": f"F{(done + i) % 100}", "given": [f"G{done + i}"]}],
                        "gender": ["male", "female"][(done + i) % 2],
                        "birthDate": f"{1940 + (done + i) % 80}-0{1 + (done + i) % 9}-1{(done + i) % 9}",
                    },
                    "request": {"method": "POST", "url": "Patient"},
                }
                for i in range(n)
            ]
            bundle = {"resourceType": "Bundle", "type": "transaction", "entry": entries}
            post(f"http://127.0.0.1:{port}/fhir", json.dumps(bundle).encode())
            done += n
            print(f"  loaded {done}/{patients}", file=sys.stderr, end="\r")
        print(
            f"\n  {patients} Patients in {time.monotonic() - start:.0f} s", file=sys.stderr
        )
    finally:
        p.terminate()
        p.wait()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--patients", type=int, default=100_000)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--binary", default=os.path.join(ROOT, "target/release/healporium"))
    ap.add_argument("--db", default=None)
    a = ap.parse_args()
    db = a.db or os.path.join(ROOT, f"target/bench-startup-{a.patients}.db")
    cwd = tempfile.mkdtemp()
    if not os.path.exists(db):
        print(f"building {db}", file=sys.stderr)
        build(a.binary, db, a.patients, cwd)
    size_mb = sum(
        os.path.getsize(db + s) for s in ["", "-wal"] if os.path.exists(db + s)
    ) / 1e6
    ready, first, rss = [], [], []
    for _ in range(a.runs):
        port = free_port()
        t0 = time.monotonic()
        p = spawn(a.binary, db, port, [], cwd)
        try:
            wait_ready(port)
            ready.append((time.monotonic() - t0) * 1000)
            status, _ = get(f"http://127.0.0.1:{port}/fhir/metadata")
            assert status == 200
            first.append((time.monotonic() - t0) * 1000)
            rss.append(rss_kb(p.pid) / 1024)
        finally:
            p.terminate()
            p.wait()
    # counts, on a server that needs no token (same file)
    port = free_port()
    p = spawn(a.binary, db, port, ["--insecure-no-auth"], cwd)
    counts = []
    try:
        wait_ready(port)
        for q in ["Patient?_summary=count&_total=accurate", "Patient?family=F7&_total=accurate&_count=10"]:
            times = []
            total = None
            for _ in range(5):
                t = time.monotonic()
                _, body = get(f"http://127.0.0.1:{port}/fhir/{q}", timeout=60)
                times.append((time.monotonic() - t) * 1000)
                total = json.loads(body).get("total")
            counts.append((q, total, sorted(times)[len(times) // 2]))
        after = rss_kb(p.pid) / 1024
    finally:
        p.terminate()
        p.wait()
    med = lambda xs: sorted(xs)[len(xs) // 2]
    print(f"| measure ({a.patients:,} Patients, {size_mb:.0f} MB SQLite file, {a.runs} starts) | median | max |")
    print("|---|---|---|")
    print(f"| exec → first 200 of /health/ready | {med(ready):.0f} ms | {max(ready):.0f} ms |")
    print(f"| exec → first 200 of /fhir/metadata | {med(first):.0f} ms | {max(first):.0f} ms |")
    print(f"| RSS when first answering | {med(rss):.0f} MB | {max(rss):.0f} MB |")
    for q, total, ms in counts:
        print(f"| `{q}` (total {total}) | {ms:.1f} ms | |")
    print(f"| RSS after the counts | {after:.0f} MB | |")


if __name__ == "__main__":
    main()
