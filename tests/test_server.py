"""The HTTP service: FastAPI TestClient and a real server process on 127.0.0.1."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import numpy as np
import pytest
from fastapi.testclient import TestClient

from minbert.config import load_config
from minbert.predict import load
from minbert.server import create_app
from minbert.train import train

PAIRS = [["A man is playing a guitar.", "A man plays the guitar."], ["How do I cook rice?", "What is the capital of France?"]]
TEXTS = ["a gorgeous, witty film", "dull and lifeless", "it is a movie"]


@pytest.fixture(scope="module")
def run_dir(tiny_encoder, data_dir, tmp_path_factory):
    over = [f"model.encoder={tiny_encoder}", "train.epochs=1", "train.device=cpu", "output.tensorboard=false",
            "output.plot=false", "output.test_predictions=false", "optim.lr=1e-3"]
    for t in ("sst", "qqp", "sts"):
        over += [f"tasks.{t}.train_limit=16", f"tasks.{t}.dev_limit=16", f"tasks.{t}.batch_size=8"]
    run = tmp_path_factory.mktemp("serve") / "run"
    train(load_config(None, over), run_dir=run, data_dir=data_dir, progress=False)
    return run


@pytest.fixture(scope="module")
def predictor(run_dir):
    return load(run_dir, device="cpu")


@pytest.fixture()
def client(predictor):
    with TestClient(create_app(predictor, max_items=4, max_chars=50, max_wait_ms=20)) as c:
        yield c


def test_endpoints_equal_the_python_api(client, predictor):
    r = client.post("/v1/sentiment", json={"texts": TEXTS})
    assert r.status_code == 200
    want = predictor.sentiment(TEXTS)
    for got, w in zip(r.json()["results"], want):
        assert got["label"] == w.label and got["name"] == w.name
        np.testing.assert_allclose(got["probabilities"], w.probabilities, atol=1e-5)
    r = client.post("/v1/paraphrase", json={"pairs": PAIRS})
    np.testing.assert_allclose(r.json()["probabilities"], predictor.paraphrase(PAIRS), atol=1e-5)
    r = client.post("/v1/similarity", json={"pairs": PAIRS})
    scores = r.json()["scores"]
    np.testing.assert_allclose(scores, predictor.similarity(PAIRS), atol=1e-5)
    assert all(0.0 <= s <= 5.0 for s in scores)
    r = client.post("/v1/embed", json={"texts": TEXTS})
    np.testing.assert_allclose(np.array(r.json()["embeddings"]), predictor.embed(TEXTS), atol=1e-5)
    h = client.get("/health").json()
    assert h["status"] == "ok" and h["tasks"] == ["sst", "qqp", "sts"]


@pytest.mark.parametrize(
    "path, body",
    [
        ("/v1/sentiment", {"texts": []}),
        ("/v1/sentiment", {"texts": ["   "]}),
        ("/v1/sentiment", {"texts": "not a list"}),
        ("/v1/sentiment", {"text": ["wrong key"]}),
        ("/v1/sentiment", {"texts": [3]}),
        ("/v1/paraphrase", {"pairs": [["only one"]]}),
        ("/v1/similarity", {"pairs": [["a", "b", "c"]]}),
        ("/v1/similarity", {"pairs": [["a", ""]]}),
    ],
)
def test_malformed_input_is_422_with_a_message(client, path, body):
    r = client.post(path, json=body)
    assert r.status_code == 422
    assert r.json()["detail"] and isinstance(r.json()["detail"], list)


def test_limits_are_413(client):
    r = client.post("/v1/sentiment", json={"texts": ["ok"] * 5})
    assert r.status_code == 413 and "limit is 4" in r.json()["detail"]
    r = client.post("/v1/similarity", json={"pairs": [["ok", "x" * 51]]})
    assert r.status_code == 413 and "51 characters" in r.json()["detail"]


def test_concurrent_requests_are_micro_batched(client, predictor):
    def one(i):
        return client.post("/v1/sentiment", json={"texts": [TEXTS[i % 3]]}).json()["results"][0]["label"]

    with ThreadPoolExecutor(8) as pool:
        labels = list(pool.map(one, range(24)))
    assert labels == [predictor.sentiment([TEXTS[i % 3]])[0].label for i in range(24)]
    stats = client.app.state.batcher.stats()
    assert stats["items"] == 24 and stats["batches"] < 24  # some requests shared a forward pass


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_real_server_process(run_dir, predictor):
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "minbert", "serve", str(run_dir), "--port", str(port), "--device", "cpu"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=dict(os.environ, OMP_NUM_THREADS="1"),
    )
    try:
        base = f"http://127.0.0.1:{port}"
        for _ in range(120):
            try:
                if httpx.get(f"{base}/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.25)
        else:
            pytest.fail("server did not come up")
        r = httpx.post(f"{base}/v1/similarity", json={"pairs": PAIRS}, timeout=10)
        np.testing.assert_allclose(r.json()["scores"], predictor.similarity(PAIRS), atol=1e-5)
        page = httpx.get(base + "/", timeout=5)
        assert page.status_code == 200 and "/v1/sentiment" in page.text and "http" not in page.text.split("<script>")[1]
        assert httpx.get(f"{base}/openapi.json", timeout=5).json()["paths"].keys() >= {"/v1/sentiment", "/v1/embed"}
    finally:
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=30)
    # graceful: the app shut down cleanly (uvicorn re-raises SIGTERM once it has finished)
    assert "Application shutdown complete" in out and proc.returncode in (0, -signal.SIGTERM), out[-2000:]


def test_bounded_load_run_has_no_errors(run_dir, tmp_path):
    out = tmp_path / "load.json"
    p = subprocess.run(
        [sys.executable, "benchmarks/serve_load.py", "--run-dir", str(run_dir), "--clients", "10", "--duration", "5", "--out", str(out)],
        capture_output=True, text=True, timeout=180, cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
    )
    assert p.returncode == 0, p.stderr[-2000:]
    res = json.loads(out.read_text())
    assert res["errors"] == 0 and res["requests"] > 10 and res["clients"] == 10
    assert res["p50_ms"] <= res["p99_ms"] and res["mean_batch"] >= 1.0
