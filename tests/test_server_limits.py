"""Hostile clients of the HTTP service: text that is not valid Unicode, bodies over the size limit
(refused while read, with bounded server memory), and clients that stall or trickle a request.
TestClient checks first, then one real ``python -m minbert serve --read-timeout 1
--max-body-bytes 1000000`` process on 127.0.0.1 spoken to over raw sockets."""

from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import time

import httpx
import pytest
from fastapi.testclient import TestClient

from minbert.cli import main
from minbert.errors import DataError
from minbert.inference.server import create_app, default_max_body_bytes
from minbert_testkit import free_port, wait_until_healthy

READ_TIMEOUT, BODY_LIMIT = 1.0, 1_000_000
NOT_UTF8 = "not valid Unicode text: a lone surrogate at character {} (pass UTF-8 encodable text)"
# raw JSON bodies: "\ud800" / "\udc80" are JSON escapes of lone surrogates, valid JSON but not valid text
SURROGATE_BODIES = [
    ("/v1/sentiment", b'{"texts": ["ok", "a \\ud800 b"]}', ["body", "texts", 1]),
    ("/v1/embed", b'{"texts": ["\\udc80"]}', ["body", "texts", 0]),
    ("/v1/paraphrase", b'{"pairs": [["ok", "\\ud800"]]}', ["body", "pairs", 0, 1]),
    ("/v1/similarity", b'{"pairs": [["\\udc80 x", "ok"]]}', ["body", "pairs", 0, 0]),
    ("/v1/tasks/sst", b'{"texts": ["\\ud800"]}', ["body", "texts", 0]),
    ("/v1/tasks/para", b'{"pairs": [["ok", "\\ud800"]]}', ["body", "pairs", 0, 1]),
    ("/v1/sentiment", b'{"texts": "\\ud800"}', ["body", "texts"]),  # not a list: the error echoes no input either
]




# ----------------------------------------------------------------------------------------------
# Python API and TestClient


def test_python_api_rejects_lone_surrogates_naming_the_item(shared_predictor):
    cases = [
        (lambda: shared_predictor.sentiment(["ok", "a\ud800b"]), "texts[1]: " + NOT_UTF8.format(1)),
        (lambda: shared_predictor.embed(["\udc80"]), "texts[0]: " + NOT_UTF8.format(0)),
        (lambda: shared_predictor.similarity([("a", "b"), ("c", "x\ud800")]), "pairs[*][1][1]: " + NOT_UTF8.format(1)),
        (lambda: shared_predictor.predict("para", [("\ud800", "b")]), "pairs[*][0][0]: " + NOT_UTF8.format(0)),
    ]
    for call, message in cases:
        with pytest.raises(DataError) as e:
            call()
        assert str(e.value) == message


def test_body_limit_counts_the_bytes_as_they_arrive(shared_predictor):
    body = json.dumps({"texts": ["x" * 85]}).encode()
    assert len(body) == 100
    too_large = {"detail": "the request body is larger than 100 bytes (the server's --max-body-bytes)"}
    headers = {"content-type": "application/json"}
    with TestClient(create_app(shared_predictor, max_chars=1000, max_body_bytes=100)) as c:
        assert c.post("/v1/sentiment", content=body, headers=headers).status_code == 200
        r = c.post("/v1/sentiment", content=body[:-2] + b' ]}', headers=headers)  # Content-Length 101
        assert r.status_code == 413 and r.json() == too_large
        chunks = [body[:50], body[50:]]  # no Content-Length: counted chunk by chunk
        assert c.post("/v1/sentiment", content=iter(chunks), headers=headers).status_code == 200
        r = c.post("/v1/sentiment", content=iter(chunks + [b" "]), headers=headers)
        assert r.status_code == 413 and r.json() == too_large
        assert c.get("/health").status_code == 200


def test_default_body_limit_admits_the_largest_valid_request(shared_predictor):
    """The largest valid request: max_items pairs of max_chars-character texts, each character an
    astral one that json.dumps writes as a 12-byte surrogate-pair escape, even indented."""
    max_items, max_chars = 4, 50
    text = "\U0001f600" * max_chars
    pairs = [[text, text]] * max_items
    with TestClient(create_app(shared_predictor, max_items=max_items, max_chars=max_chars)) as c:
        for body in (json.dumps({"pairs": pairs}), json.dumps({"pairs": pairs}, indent=4)):
            assert len(body) > 2 * max_items * max_chars * 12
            r = c.post("/v1/similarity", content=body, headers={"content-type": "application/json"})
            assert r.status_code == 200 and len(r.json()["scores"]) == max_items
    assert len(json.dumps({"pairs": pairs}, indent=4)) <= default_max_body_bytes(max_items, max_chars)
    assert default_max_body_bytes(256, 10_000) == 256 * (2 * 10_000 * 12 + 64) + 1024


@pytest.mark.parametrize("flag, value, message", [
    ("--read-timeout", "0", "error: --read-timeout 0.0: must be > 0 seconds"),
    ("--max-body-bytes", "0", "error: --max-body-bytes 0: must be >= 1"),
    ("--max-items", "0", "error: --max-items 0: must be >= 1"),
    ("--max-chars", "-5", "error: --max-chars -5: must be >= 1"),
    ("--port", "99999", "error: --port 99999: must be in 0..65535"),
    ("--host", "256.1.1.1", "error: --host 256.1.1.1 --port 8000: cannot listen there"),
])
def test_serve_rejects_bad_limits(shared_run_dir, capsys, flag, value, message):
    assert main(["serve", str(shared_run_dir), flag, value]) == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and err[0].startswith(message), err


def test_serve_on_a_port_in_use_is_one_line_before_the_model_loads(shared_run_dir, capsys):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        assert main(["serve", str(shared_run_dir), "--port", str(port)]) == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and err[0].startswith(f"error: --host 127.0.0.1 --port {port}: cannot listen there"), err
    assert "in use" in err[0]


# ----------------------------------------------------------------------------------------------
# a real server process


@pytest.fixture(scope="module")
def server(shared_run_dir, tmp_path_factory):
    """``python -m minbert serve`` with a 1 s read timeout and a 1 MB body limit; yields (port, pid)."""
    port = free_port()
    log_path = tmp_path_factory.mktemp("server-limits") / "server.log"
    cmd = [sys.executable, "-m", "minbert", "serve", str(shared_run_dir), "--port", str(port), "--device", "cpu",
           "--read-timeout", str(READ_TIMEOUT), "--max-body-bytes", str(BODY_LIMIT), "--no-access-log"]
    with open(log_path, "w") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=dict(os.environ, OMP_NUM_THREADS="1"))
    try:
        wait_until_healthy(f"http://127.0.0.1:{port}", proc, log_path)
        yield port, proc.pid
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)


def healthy(port: int) -> bool:
    return httpx.get(f"http://127.0.0.1:{port}/health", timeout=5).status_code == 200


def test_surrogate_text_is_422_and_the_kept_alive_connection_serves_on(server):
    port, _ = server
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    conn.connect()
    sock = conn.sock
    headers = {"Content-Type": "application/json"}
    for path, body, where in SURROGATE_BODIES:
        conn.request("POST", path, body=body, headers=headers)
        r = conn.getresponse()
        data = r.read()
        assert r.status == 422, (path, data)
        error = json.loads(data)["detail"][0]
        assert error["loc"] == where and error["msg"] and "input" not in error
        assert b"ud800" not in data and b"udc80" not in data  # the bad text is not echoed
        conn.request("POST", "/v1/similarity", body=b'{"pairs": [["a b", "a c"]]}', headers=headers)
        r = conn.getresponse()
        assert r.status == 200 and len(json.loads(r.read())["scores"]) == 1
        assert conn.sock is sock  # the same connection: http.client would reconnect on a closed one
    conn.close()


NONFINITE_BODIES = [
    ("/v1/sentiment", b'{"texts": [1e999]}'),
    ("/v1/sentiment", b"NaN"),
    ("/v1/embed", b'{"texts": NaN}'),
    ("/v1/similarity", b'{"pairs": [["a", Infinity]]}'),
    ("/v1/paraphrase", b'{"texts": ["a"], "x": 1e999}'),
    ("/v1/tasks/sst", b'{"texts": [-Infinity]}'),
]


def test_nonfinite_numbers_in_a_bad_request_are_422_not_500(server):
    """Python's JSON parser reads NaN, Infinity and 1e999; the 422 answer must not echo them (strict
    JSON cannot write them), and the kept-alive connection serves on."""
    port, _ = server
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    headers = {"Content-Type": "application/json"}
    for path, body in NONFINITE_BODIES:
        conn.request("POST", path, body=body, headers=headers)
        r = conn.getresponse()
        data = r.read()
        assert r.status == 422, (path, body, data)
        detail = json.loads(data)["detail"]
        assert detail and all("input" not in e for e in detail), data
        conn.request("POST", "/v1/similarity", body=b'{"pairs": [["a b", "a c"]]}', headers=headers)
        r = conn.getresponse()
        assert r.status == 200 and len(json.loads(r.read())["scores"]) == 1
    conn.close()


def vm_bytes(pid: int, key: str) -> int:
    """VmRSS (resident now) or VmHWM (peak resident since the last reset) of a process, in bytes."""
    with open(f"/proc/{pid}/status") as f:
        return next(int(line.split()[1]) * 1024 for line in f if line.startswith(key + ":"))


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
def test_oversized_body_is_413_and_server_memory_stays_bounded(server, chunked):
    """A 50 MB body against the 1 MB limit: 413, and the server's peak RSS grows by less than
    twice the limit (the starting code read and parsed all of it: about 100 MB)."""
    port, pid = server
    try:
        with open(f"/proc/{pid}/clear_refs", "w") as f:
            f.write("5")  # reset the peak resident size (VmHWM) to the current one
    except OSError as e:
        pytest.skip(f"cannot reset the peak RSS of the server here: {e}")
    before = vm_bytes(pid, "VmRSS")
    total, block = 50_000_000, b"x" * 65536
    head = b"POST /v1/sentiment HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
    head += b"Transfer-Encoding: chunked\r\n\r\n" if chunked else b"Content-Length: %d\r\n\r\n" % total
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(head)
        try:
            for _ in range(total // len(block)):
                s.sendall(b"%x\r\n%s\r\n" % (len(block), block) if chunked else block)
            s.sendall(b"0\r\n\r\n" if chunked else b"x" * (total % len(block)))
        except (BrokenPipeError, ConnectionResetError):
            pass  # the read timeout may end a slow upload; the 413 was sent before
        response = b""
        while b"\r\n\r\n" not in response or not response.endswith(b"}"):
            part = s.recv(65536)
            if not part:
                break
            response += part
    growth = vm_bytes(pid, "VmHWM") - before
    assert growth < 2 * BODY_LIMIT, f"server peak RSS grew by {growth} bytes"
    assert response.startswith(b"HTTP/1.1 413 "), response[:200]
    assert json.loads(response.split(b"\r\n\r\n", 1)[1]) == {
        "detail": f"the request body is larger than {BODY_LIMIT} bytes (the server's --max-body-bytes)"}
    assert healthy(port)


HEAD = b"POST /v1/sentiment HTTP/1.1\r\nHost: 127.0.0.1\r\n"
BODY_HEAD = HEAD + b"Content-Type: application/json\r\nContent-Length: 100\r\n\r\n"
STALLS = {
    "nothing sent": [],
    "partial headers": [HEAD],
    "trickled headers": [HEAD + b"X-Slow: "] + [b"a"] * 40,
    "partial body": [BODY_HEAD, b'{"texts": ["'],
    "trickled body": [BODY_HEAD] + [b"x"] * 40,
}


@pytest.mark.parametrize("sends", STALLS.values(), ids=STALLS.keys())
def test_stalled_or_trickling_client_is_closed_after_the_read_timeout(server, sends):
    """The parts are sent 0.2 s apart (a trickle of 40 parts takes 8 s); the server must close the
    connection about READ_TIMEOUT after it opened, not at once and not after the whole trickle."""
    port, _ = server
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        start = time.monotonic()
        closed_after, i = None, 0
        while closed_after is None and time.monotonic() - start < 6 * READ_TIMEOUT:
            try:
                if i < len(sends):
                    s.sendall(sends[i])
                    i += 1
                s.settimeout(0.2)
                if s.recv(4096) == b"":
                    closed_after = time.monotonic() - start
            except TimeoutError:
                continue
            except (BrokenPipeError, ConnectionResetError):
                closed_after = time.monotonic() - start
    assert closed_after is not None, "the connection was still open after 6 read timeouts"
    assert 0.9 * READ_TIMEOUT <= closed_after <= 3 * READ_TIMEOUT
    assert healthy(port)
