"""Load test of ``minbert serve`` on this machine: N concurrent clients for D seconds against a
local server (127.0.0.1 only), each sending one-sentence sentiment requests back to back.

An error is a non-2xx response, a response slower than 10 s, or a connection failure. Prints JSON
(and writes it with --out): clients, duration_s, requests, errors, rps, p50_ms, p99_ms,
mean_batch (items per forward pass, from the server's /health).

    python benchmarks/serve_load.py --run-dir RUN --clients 50 --duration 60 --out reports/serve_load.json
    python benchmarks/serve_load.py --url http://127.0.0.1:8000 ...   (a server already running)
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np

SENTENCES = [
    "a gorgeous, witty, seductive movie.",
    "the plot is nothing but boilerplate clichés from start to finish.",
    "an utterly charming and hilarious film that reminded me why I love the movies.",
    "it is a film.",
    "too long, too slow and too self-satisfied.",
]


async def client(http: httpx.AsyncClient, url: str, stop_at: float, lat: list, errors: list, k: int) -> None:
    i = k
    while time.monotonic() < stop_at:
        t0 = time.monotonic()
        try:
            r = await http.post(url, json={"texts": [SENTENCES[i % len(SENTENCES)]]}, timeout=10.0)
            if r.status_code // 100 != 2:
                errors.append(f"HTTP {r.status_code}")
            else:
                lat.append(time.monotonic() - t0)
        except httpx.HTTPError as e:
            errors.append(type(e).__name__)
        i += 1


async def load(base: str, clients: int, duration: float) -> dict:
    lat: list[float] = []
    errors: list[str] = []
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(limits=limits) as http:
        before = (await http.get(f"{base}/health")).json()["batching"]
        t0 = time.monotonic()
        await asyncio.gather(*(client(http, f"{base}/v1/sentiment", t0 + duration, lat, errors, k) for k in range(clients)))
        elapsed = time.monotonic() - t0
        after = (await http.get(f"{base}/health")).json()["batching"]
    batches = after["batches"] - before["batches"]
    items = after["items"] - before["items"]
    ms = np.array(lat) * 1000 if lat else np.zeros(1)
    return {
        "clients": clients,
        "duration_s": round(elapsed, 2),
        "requests": len(lat) + len(errors),
        "errors": len(errors),
        "rps": round(len(lat) / elapsed, 2),
        "p50_ms": round(float(np.percentile(ms, 50)), 1),
        "p99_ms": round(float(np.percentile(ms, 99)), 1),
        "mean_batch": round(items / batches, 2) if batches else 0.0,
        "error_kinds": sorted(set(errors)),
    }


def start_server(run_dir: str, device: str) -> tuple[subprocess.Popen, str]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen(
        [sys.executable, "-m", "minbert", "serve", run_dir, "--port", str(port), "--device", device],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}"
    for _ in range(240):
        try:
            if httpx.get(f"{base}/health", timeout=1).status_code == 200:
                return proc, base
        except httpx.HTTPError:
            time.sleep(0.25)
    proc.kill()
    raise SystemExit("server did not start")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--run-dir", help="start `minbert serve RUN_DIR` on a free local port")
    ap.add_argument("--url", help="or use a running local server")
    ap.add_argument("--clients", type=int, default=50)
    ap.add_argument("--duration", type=float, default=60.0)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--out")
    args = ap.parse_args()
    proc = None
    if args.url:
        base = args.url.rstrip("/")
    elif args.run_dir:
        proc, base = start_server(args.run_dir, args.device)
    else:
        raise SystemExit("give --run-dir or --url")
    try:
        result = asyncio.run(load(base, args.clients, args.duration))
    finally:
        if proc is not None:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=60)
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")


if __name__ == "__main__":
    main()
