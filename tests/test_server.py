"""The HTTP service: FastAPI TestClient, then one real ``python -m minbert serve`` process on
127.0.0.1 (a random free port) used by the HTTP checks, the bounded load test, the headless
Chromium test of the demo page and, last, the SIGTERM shutdown test."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import pytest
from fastapi.testclient import TestClient

from minbert.inference.server import create_app
from minbert_testkit import NAMES, free_port, wait_until_healthy

REPO = Path(__file__).resolve().parents[1]
PAIRS = [
    ["A man is playing a guitar.", "A man plays the guitar."], ["How do I cook rice?", "What is the capital of France?"]
]
TEXTS = ["a gorgeous, witty film", "dull and lifeless", "it is a movie"]
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"


@pytest.fixture(scope="module")
def run_dir(shared_run_dir):
    return shared_run_dir


@pytest.fixture(scope="module")
def predictor(shared_predictor):
    return shared_predictor


@pytest.fixture()
def client(predictor):
    with TestClient(create_app(predictor, max_items=4, max_chars=50, max_wait_ms=20)) as c:
        yield c


# ----------------------------------------------------------------------------------------------
# TestClient


def test_endpoints_equal_the_python_api(client, predictor):
    r = client.post("/v1/sentiment", json={"texts": TEXTS})
    assert r.status_code == 200
    want = predictor.sentiment(TEXTS)
    for got, w in zip(r.json()["results"], want, strict=True):
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
    assert h["status"] == "ok" and h["tasks"] == ["sst", "qqp", "sts", "para"]


def test_custom_task_endpoint(client, predictor):
    r = client.post("/v1/tasks/para", json={"pairs": PAIRS})
    assert r.status_code == 200 and r.json()["task"] == "para"
    want = predictor.predict("para", PAIRS)
    for got, w in zip(r.json()["results"], want, strict=True):
        assert got["label"] == w["label"] and got["name"] == w["name"] in NAMES
        np.testing.assert_allclose(got["probabilities"], w["probabilities"], atol=1e-5)
    r = client.post("/v1/tasks/sts", json={"pairs": PAIRS})
    np.testing.assert_allclose([x["score"] for x in r.json()["results"]], predictor.similarity(PAIRS), atol=1e-5)
    r = client.post("/v1/tasks/para", json={"texts": ["one text"]})
    assert r.status_code == 422 and r.json()["detail"] == "task 'para' takes pairs"
    r = client.post("/v1/tasks/nli", json={"texts": ["x"]})
    assert r.status_code == 404 and "no 'nli' head" in r.json()["detail"]


@pytest.mark.parametrize(
    "path, body, where",
    [
        ("/v1/sentiment", {"texts": []}, ["body", "texts"]),
        ("/v1/sentiment", {"texts": ["   "]}, ["body", "texts", 0]),
        ("/v1/sentiment", {"texts": "not a list"}, ["body", "texts"]),
        ("/v1/sentiment", {"text": ["wrong key"]}, ["body", "texts"]),
        ("/v1/sentiment", {"texts": [3]}, ["body", "texts", 0]),
        ("/v1/paraphrase", {"pairs": [["only one"]]}, ["body", "pairs", 0, 1]),
        ("/v1/similarity", {"pairs": [["a", "b", "c"]]}, ["body", "pairs", 0]),
        ("/v1/similarity", {"pairs": [["a", ""]]}, ["body", "pairs", 0, 1]),
        ("/v1/embed", {"texts": None}, ["body", "texts"]),
        ("/v1/tasks/para", {"texts": ["a"], "pairs": [["a", "b"]]}, ["body"]),
    ],
)
def test_malformed_input_is_422_with_a_message(client, path, body, where):
    r = client.post(path, json=body)
    assert r.status_code == 422
    detail = r.json()["detail"]
    assert isinstance(detail, list) and detail[0]["loc"] == where and detail[0]["msg"]


def test_a_422_answer_echoes_a_small_input_but_not_a_large_one(predictor):
    with TestClient(create_app(predictor)) as client:  # the default limits
        small = client.post("/v1/similarity", json={"texts": ["a", "b"]})
        assert small.status_code == 422 and small.json()["detail"][0]["input"] == {"texts": ["a", "b"]}
        big = client.post("/v1/similarity", json={"texts": ["x" * 1000] * 200})  # 200 kB under the wrong key
        detail = big.json()["detail"]
    assert big.status_code == 422 and detail[0]["loc"] == ["body", "pairs"] and "input" not in detail[0]
    assert len(big.content) < 1000


def test_non_json_body_is_422(client):
    r = client.post("/v1/sentiment", content=b"not json", headers={"content-type": "application/json"})
    assert r.status_code == 422 and r.json()["detail"][0]["type"] == "json_invalid"


def test_limits_are_413(client):
    r = client.post("/v1/sentiment", json={"texts": ["ok"] * 5})
    assert r.status_code == 413 and r.json()["detail"] == "5 items in one request; the limit is 4"
    r = client.post("/v1/similarity", json={"pairs": [["ok", "x" * 51]]})
    assert r.status_code == 413 and r.json()["detail"] == "item 0 has a text of 51 characters; the limit is 50"
    assert client.post("/v1/similarity", json={"pairs": [["ok", "x" * 50]]}).status_code == 200


def test_concurrent_requests_are_micro_batched(client, predictor):
    def one(i):
        return client.post("/v1/sentiment", json={"texts": [TEXTS[i % 3]]}).json()["results"][0]

    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(one, range(24)))
    for i, r in enumerate(results):
        want = predictor.sentiment([TEXTS[i % 3]])[0]
        assert r["label"] == want.label
        np.testing.assert_allclose(r["probabilities"], want.probabilities, atol=1e-5)
    stats = client.get("/v1/stats").json()
    assert stats["items"] == 24 and stats["batches"] < 24  # some requests shared a forward pass
    assert sum(int(k) * v for k, v in stats["histogram"].items()) == 24 and stats["max_batch"] > 1
    assert stats["mean_batch"] == pytest.approx(24 / stats["batches"])


def test_openapi_and_demo_page(client):
    paths = client.get("/openapi.json").json()["paths"]
    endpoints = {
        "/v1/sentiment", "/v1/paraphrase", "/v1/similarity", "/v1/embed", "/v1/tasks/{task}", "/health", "/v1/stats"
    }
    assert endpoints <= set(paths)
    assert client.get("/docs").status_code == 200
    page = client.get("/").text
    assert "/v1/sentiment" in page and "/v1/paraphrase" in page and "/v1/similarity" in page
    assert "http" not in page.split("<script>")[1] and "<link" not in page and "src=" not in page  # no external assets


# ----------------------------------------------------------------------------------------------
# a real server process


@pytest.fixture(scope="module")
def server(run_dir, tmp_path_factory):
    """``python -m minbert serve`` on a free port; yields (base url, process, log file)."""
    port = free_port()
    log_path = tmp_path_factory.mktemp("server") / "server.log"
    log = open(log_path, "w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "minbert", "serve", str(run_dir), "--port", str(port), "--device", "cpu",
         "--max-items", "300"],
        stdout=log, stderr=subprocess.STDOUT, text=True, env=dict(os.environ, OMP_NUM_THREADS="1"),
    )
    base = f"http://127.0.0.1:{port}"
    try:
        wait_until_healthy(base, proc, log_path)
        yield base, proc, log_path
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=30)
        log.close()


def test_real_server_http(server, predictor):
    base, proc, _ = server
    assert base.startswith("http://127.0.0.1:")
    r = httpx.post(f"{base}/v1/similarity", json={"pairs": PAIRS}, timeout=10)
    np.testing.assert_allclose(r.json()["scores"], predictor.similarity(PAIRS), atol=1e-5)
    r = httpx.post(f"{base}/v1/sentiment", json={"texts": TEXTS}, timeout=10)
    np.testing.assert_allclose(
        [x["probabilities"] for x in r.json()["results"]], [s.probabilities for s in predictor.sentiment(TEXTS)],
        atol=1e-5,
    )
    r = httpx.post(f"{base}/v1/embed", json={"texts": TEXTS}, timeout=10)
    np.testing.assert_allclose(r.json()["embeddings"], predictor.embed(TEXTS), atol=1e-5)
    r = httpx.post(f"{base}/v1/paraphrase", json={"pairs": PAIRS}, timeout=10)
    np.testing.assert_allclose(r.json()["probabilities"], predictor.paraphrase(PAIRS), atol=1e-5)
    r = httpx.post(f"{base}/v1/sentiment", json={"texts": ["ok"] * 301}, timeout=10)
    assert r.status_code == 413 and r.json()["detail"] == "301 items in one request; the limit is 300"
    r = httpx.post(f"{base}/v1/sentiment", json={"texts": ["x" * 10_001]}, timeout=10)
    assert r.status_code == 413 and r.json()["detail"] == "item 0 has a text of 10001 characters; the limit is 10000"
    assert httpx.post(f"{base}/v1/paraphrase", json={"pairs": [["a"]]}, timeout=10).status_code == 422
    assert httpx.get(f"{base}/openapi.json", timeout=5).json()["paths"].keys() >= {"/v1/sentiment", "/v1/embed"}


def test_bounded_load_run_has_no_errors(server, tmp_path):
    base, _, _ = server
    out = tmp_path / "load.json"
    p = subprocess.run(
        [sys.executable, "benchmarks/serve_load.py", "--url", base, "--clients", "10", "--duration", "5",
         "--out", str(out)],
        capture_output=True, text=True, timeout=120, cwd=REPO,
    )
    assert p.returncode == 0, p.stderr[-2000:]
    res = json.loads(out.read_text())
    assert json.loads(p.stdout) == res
    assert set(res) == {"clients", "duration_s", "requests", "errors", "rps", "p50_ms", "p99_ms", "mean_batch"}
    assert res["errors"] == 0 and res["requests"] > 10 and res["clients"] == 10 and res["duration_s"] >= 5
    assert res["rps"] == pytest.approx(res["requests"] / res["duration_s"], rel=0.05)
    assert 0 < res["p50_ms"] <= res["p99_ms"] < 10_000 and res["mean_batch"] >= 1.0


@pytest.mark.skipif(not (os.access(CHROMIUM, os.X_OK) and os.access(CHROMEDRIVER, os.X_OK)),
                    reason="chromium/chromedriver not installed (apt-get install -y chromium chromium-driver; "
                    "see .ci/install-browser.sh)")
def test_demo_page_in_headless_chromium(server, predictor, tmp_path):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    def page_state(d: webdriver.Chrome) -> str:
        return d.find_element(By.TAG_NAME, "body").get_attribute("data-state")

    base, _, _ = server
    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=900,1000"):
        opts.add_argument(arg)
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=opts)
    try:
        driver.get(base + "/")
        a, b = "An utterly charming and hilarious film.", "A very funny and charming movie."
        for field, text in (("a", a), ("b", b)):
            box = driver.find_element(By.ID, field)
            box.clear()
            box.send_keys(text)
        driver.find_element(By.ID, "go").click()
        WebDriverWait(driver, 20).until(lambda d: page_state(d) in ("done", "error"))
        assert driver.find_element(By.ID, "error").text == ""
        want = predictor.sentiment([a])[0]
        assert driver.find_element(By.ID, "label").text == want.name
        shown = [float(driver.find_element(By.ID, f"p{i}").text) for i in range(5)]
        np.testing.assert_allclose(shown, want.probabilities, atol=5e-4)  # shown with 3 decimals
        assert driver.find_element(By.ID, "paraphrase").text == f"{predictor.paraphrase([(a, b)])[0]:.3f}"
        assert driver.find_element(By.ID, "similarity").text == f"{predictor.similarity([(a, b)])[0]:.2f}"
        shot = Path(os.environ.get("MINBERT_DEMO_SCREENSHOT", tmp_path / "demo.png"))
        assert driver.save_screenshot(str(shot)) and shot.read_bytes()[:4] == b"\x89PNG"
        # an empty sentence shows the error line instead of results
        driver.find_element(By.ID, "a").clear()
        driver.find_element(By.ID, "go").click()
        WebDriverWait(driver, 20).until(lambda d: page_state(d) == "error")
        assert driver.find_element(By.ID, "error").text == "type a sentence first"
    finally:
        driver.quit()


def test_sigterm_lets_in_flight_requests_finish(server):
    """Last test of the module: it stops the shared server."""
    base, proc, log_path = server
    texts = [f"sentence number {i} " + "word " * 100 for i in range(256)]
    results: list = []

    def big_request():
        try:
            r = httpx.post(f"{base}/v1/embed", json={"texts": texts}, timeout=30)
            results.append((r.status_code, len(r.json()["embeddings"])))
        except httpx.HTTPError as e:
            results.append(type(e).__name__)

    threads = [threading.Thread(target=big_request) for _ in range(4)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 20
    while httpx.get(f"{base}/v1/stats", timeout=5).json()["in_flight"] < 4 and time.monotonic() < deadline:
        time.sleep(0.002)  # wait until the server holds all four requests, then stop it
    assert httpx.get(f"{base}/v1/stats", timeout=5).json()["in_flight"] >= 1, "the requests finished before SIGTERM"
    proc.send_signal(signal.SIGTERM)
    for t in threads:
        t.join(timeout=60)
    assert results == [(200, 256)] * 4
    proc.wait(timeout=30)
    log = log_path.read_text()
    # graceful: the app shut down cleanly (uvicorn re-raises SIGTERM once it has finished)
    assert "Waiting for application shutdown" in log and "Application shutdown complete" in log, log[-2000:]
    assert proc.returncode in (0, -signal.SIGTERM), log[-2000:]
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{base}/health", timeout=2)
