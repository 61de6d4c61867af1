"""Load test of ``minbert serve`` on this machine: N concurrent clients for D seconds against a
local server (127.0.0.1 only), each sending one-sentence sentiment requests back to back.

An error is a non-2xx response, a response slower than 10 s, or a connection failure. Prints JSON
and writes it to --out (default reports/serve_load.json): clients, duration_s, requests, errors,
rps (answered requests per second), p50_ms, p99_ms (latency of the answered requests),
mean_batch (items per forward pass over the run, from the server's /health). The kinds of the
errors, if any, go to stderr.

    python benchmarks/serve_load.py --run-dir RUN --clients 50 --duration 60
    python benchmarks/serve_load.py --url http://127.0.0.1:8000 ...   (a local server already running)
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np

REPO = Path(__file__).resolve().parents[1]
LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1")

SENTENCES = [
    "a gorgeous, witty, seductive movie.",
    "the plot is nothing but boilerplate clichés from start to finish.",
    "an utterly charming and hilarious film that reminded me why I love the movies.",
    "it is a film.",
    "too long, too slow and too self-satisfied.",
]


async def client(url: str, stop_at: float, lat: list, errors: list, k: int) -> None:
    # one connection per client (its own AsyncClient): a single pool shared by 50 concurrent
    # clients costs the load generator more CPU than the server spends per request
    async with httpx.AsyncClient(limits=httpx.Limits(max_connections=1)) as http:
        await _client(http, url, stop_at, lat, errors, k)


async def _client(http: httpx.AsyncClient, url: str, stop_at: float, lat: list, errors: list, k: int) -> None:
    i = k
    while time.monotonic() < stop_at:
        t0 = time.monotonic()
        try:
            # 10 s for the whole request (httpx's own timeout applies per phase)
            post = http.post(url, json={"texts": [SENTENCES[i % len(SENTENCES)]]}, timeout=10.0)
            r = await asyncio.wait_for(post, 10.0)
            if r.status_code // 100 != 2:
                errors.append(f"HTTP {r.status_code}")
            else:
                lat.append(time.monotonic() - t0)
        except TimeoutError:
            errors.append("timeout > 10 s")
        except httpx.HTTPError as e:
            errors.append(type(e).__name__)
        i += 1


async def load(base: str, clients: int, duration: float) -> tuple[dict, list[str]]:
    """Run the clients; returns (the result record, the distinct error kinds)."""
    lat: list[float] = []
    errors: list[str] = []
    async with httpx.AsyncClient() as http:
        before = (await http.get(f"{base}/health")).json()["batching"]
        t0 = time.monotonic()
        await asyncio.gather(*(client(f"{base}/v1/sentiment", t0 + duration, lat, errors, k) for k in range(clients)))
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
    }, sorted(set(errors))


def start_server(run_dir: str, device: str) -> tuple[subprocess.Popen, str]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen(
        [sys.executable, "-m", "minbert", "serve", run_dir, "--port", str(port), "--device", device, "--no-access-log"],
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
    ap.add_argument("--out", default=str(REPO / "reports" / "serve_load.json"))
    args = ap.parse_args()
    proc = None
    if args.url:
        base = args.url.rstrip("/")
        if httpx.URL(base).host not in LOCAL_HOSTS:
            raise SystemExit(f"--url {args.url}: only a local server (127.0.0.1) may be load-tested")
    elif args.run_dir:
        proc, base = start_server(args.run_dir, args.device)
    else:
        raise SystemExit("give --run-dir or --url")
    try:
        result, kinds = asyncio.run(load(base, args.clients, args.duration))
    finally:
        if proc is not None:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=60)
    from minbert.io import atomic_write_text

    text = json.dumps(result, indent=2)
    print(text)
    if kinds:
        print(f"error kinds: {kinds}", file=sys.stderr)
    atomic_write_text(args.out, text + "\n")


if __name__ == "__main__":
    main()
