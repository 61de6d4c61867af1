"""The Python predictor: ``minbert.load(run_dir)`` and its four task methods, batching,
threads, and its user errors."""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import torch

import minbert
from minbert.errors import CheckpointError, ConfigError, MinbertError
from minbert.inference.predictor import Predictor, Sentiment
from minbert.tasks.base import get_task
from minbert_testkit import NAMES, shared_run

TEXTS = [
    "a gorgeous, witty film", "dull and lifeless", "it is a movie",
    "an utterly charming and hilarious film that reminded me why I love the movies",
]
PAIRS = [
    ("A man is playing a guitar.", "A man plays the guitar."),
    ("How do I cook rice?", "What is the capital of France?"),
    ("same", "same"),
]


@pytest.fixture(scope="module")
def run(tiny_encoder, data_dir, tmp_path_factory):
    return shared_run(tiny_encoder, data_dir, tmp_path_factory)


@pytest.fixture(scope="module")
def predictor(run) -> Predictor:
    return minbert.load(run.run_dir, device="cpu")


def softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def test_load_is_exposed_at_the_top_level(predictor):
    from minbert.inference.predictor import load

    assert minbert.load is load
    assert isinstance(predictor, minbert.Predictor)
    assert predictor.tasks == ["sst", "qqp", "sts", "para"] and predictor.device.type == "cpu"


def test_sentiment(predictor):
    out = predictor.sentiment(TEXTS)
    logits = predictor.outputs("sst", TEXTS)
    assert logits.shape == (4, 5) and logits.dtype == np.float32
    for s, p in zip(out, softmax(logits.astype(np.float64)), strict=True):
        assert isinstance(s, Sentiment) and s.label == int(p.argmax()) and 0 <= s.label <= 4
        assert s.name == get_task("sst").label_names[s.label]
        assert len(s.probabilities) == 5 and sum(s.probabilities) == pytest.approx(1.0, abs=1e-6)
        np.testing.assert_allclose(s.probabilities, p, atol=1e-6)


def test_paraphrase_and_similarity(predictor):
    prob = predictor.paraphrase(PAIRS)
    assert prob.shape == (3,) and prob.dtype == np.float32 and ((0 <= prob) & (prob <= 1)).all()
    logit = predictor.outputs("qqp", [a for a, _ in PAIRS], [b for _, b in PAIRS])
    np.testing.assert_allclose(prob, 1 / (1 + np.exp(-logit.astype(np.float64))), atol=1e-6)
    sim = predictor.similarity(PAIRS)
    assert sim.shape == (3,) and sim.dtype == np.float32 and ((0 <= sim) & (sim <= 5)).all()
    np.testing.assert_array_equal(sim, predictor.outputs("sts", [a for a, _ in PAIRS], [b for _, b in PAIRS]))


def test_embed_is_the_mean_of_the_encoder_states(predictor):
    emb = predictor.embed(TEXTS)
    H = predictor.model.encoder.config.hidden_size
    assert emb.shape == (4, H) and emb.dtype == np.float32
    for i, t in enumerate(TEXTS):  # one text alone: no padding at all
        batch = predictor.tokenizer([t])
        with torch.no_grad():
            out = predictor.model.encoder(batch["input_ids"], batch["attention_mask"], batch["token_type_ids"])
            hidden = out.last_hidden_state
        np.testing.assert_allclose(emb[i], hidden[0].mean(0).numpy(), atol=1e-5)
    assert predictor.embed([]).shape == (0, H)


def test_generic_predict_of_the_custom_task(predictor):
    out = predictor.predict("para", PAIRS)
    probs = softmax(predictor.outputs("para", [a for a, _ in PAIRS], [b for _, b in PAIRS]).astype(np.float64))
    for o, p in zip(out, probs, strict=True):
        assert o["label"] == int(p.argmax()) and o["name"] == NAMES[o["label"]]
        np.testing.assert_allclose(o["probabilities"], p, atol=1e-6)
    scores = [o["score"] for o in predictor.predict("sts", PAIRS)]
    assert scores == pytest.approx(predictor.similarity(PAIRS).tolist(), abs=1e-6)
    probabilities = [o["probability"] for o in predictor.predict("qqp", PAIRS)]
    assert probabilities == pytest.approx(predictor.paraphrase(PAIRS).tolist(), abs=1e-6)


def test_internal_batching_does_not_change_results(run, predictor):
    small = minbert.load(run.run_dir, device="cpu", batch_size=2)
    texts = TEXTS * 3
    np.testing.assert_allclose(small.embed(texts), predictor.embed(texts), atol=1e-5)
    np.testing.assert_allclose(
        [s.probabilities for s in small.sentiment(texts)], [s.probabilities for s in predictor.sentiment(texts)],
        atol=1e-5,
    )
    np.testing.assert_allclose(small.similarity(PAIRS * 3), predictor.similarity(PAIRS * 3), atol=1e-5)


def test_threads_give_the_sequential_results(predictor):
    calls = []
    for i in range(24):
        k = i % 4
        calls.append((k, TEXTS[i % 4 :] + TEXTS[: i % 4] if k in (0, 3) else PAIRS[i % 3 :] + PAIRS[: i % 3]))

    def one(call):
        k, items = call
        if k == 0:
            return np.array([s.probabilities for s in predictor.sentiment(items)])
        if k == 1:
            return predictor.paraphrase(items)
        if k == 2:
            return predictor.similarity(items)
        return predictor.embed(items)

    sequential = [one(c) for c in calls]
    with ThreadPoolExecutor(8) as pool_:
        threaded = list(pool_.map(one, calls))
    for s, t in zip(sequential, threaded, strict=True):
        np.testing.assert_allclose(t, s, atol=1e-6)


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda p: p.sentiment("one string"), "texts: expected a list of strings, got one string"),
        (lambda p: p.sentiment(["ok", "  "]), "texts[1]: empty or whitespace-only text"),
        (lambda p: p.sentiment(["ok", 3]), "texts[1]: expected a string, got int"),
        (lambda p: p.paraphrase([("a", "b", "c")]), "pairs[0]: expected a pair of two strings"),
        (lambda p: p.similarity("a b"), "pairs: expected a list of (text, text) pairs, got one string"),
        (lambda p: p.similarity([("a", "")]), "pairs[*][1][0]: empty or whitespace-only text"),
        (lambda p: p.predict("nli", ["x"]), "unknown task 'nli'"),
    ],
)
def test_user_errors(predictor, call, message):
    with pytest.raises(MinbertError) as e:
        call(predictor)
    assert message in str(e.value)


def test_load_errors(tmp_path, run):
    with pytest.raises(CheckpointError, match="no such run folder"):
        minbert.load(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError, match="not a minbert run folder"):
        minbert.load(tmp_path / "empty")
    with pytest.raises(ConfigError, match="batch_size 0"):
        minbert.load(run.run_dir, batch_size=0)


def test_cli_batch_prediction_reports_and_skips_bad_rows(run, predictor, tmp_path, caplog, capsys):
    from minbert.cli import main

    src = tmp_path / "pairs.jsonl"
    rows = [
        '{"id": "a", "sentence1": "A man is playing a guitar.", "sentence2": "A man plays the guitar."}',
        '{"id": "b", "sentence1": "only one"}',
        "[1, 2]",
        '{"id": "c", "sentence1": "How do I cook rice?", "sentence2": 7}',
        "{broken",
        '{"sentence1": "same", "sentence2": "same"}',
        '{"id": "d", "sentence1": "x", "sentence2": ' + "[" * 100_000 + "]" * 100_000 + "}",
    ]
    src.write_text("\n".join(rows) + "\n")
    out = tmp_path / "out.csv"
    assert main([
        "predict", str(run.run_dir), "--task=sts", f"--input={src}", f"--output={out}", "--device=cpu", "--batch-size=1"
    ]) == 0
    for line, reason in (
        (2, "missing text in column 'sentence2'"), (3, "expected a JSON object, got list"),
        (4, "'sentence2' is not a string"), (5, "not valid JSON"), (7, "JSON nested too deeply"),
    ):
        assert f"skipped {src}:{line}: {reason}" in caplog.text
    assert f"{src}: 7 data lines: 2 kept, 5 bad" in caplog.text
    assert "predict sts:   0%|          | 0/2 [" in capsys.readouterr().err  # the progress bar, over the 2 rows
    lines = out.read_text().splitlines()
    want = predictor.similarity([PAIRS[0], ("same", "same")])
    assert lines == ["id,Predicted_Similarity", f"a,{want[0]:.4f}", f"6,{want[1]:.4f}"]  # no id column: the line number


def test_cli_batch_prediction_of_an_unreadable_file_is_one_line_exit_2(run, tmp_path, capsys):
    from minbert.cli import main

    bad = tmp_path / "latin1.csv"
    bad.write_bytes("id,sentence\n1,caf\xe9\n".encode("latin-1"))
    assert main(["predict", str(run.run_dir), "--task=sst", f"--input={bad}", "--device=cpu"]) == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        f"error: {bad}: line 2: not UTF-8 text (unexpected end of data)"
    ]


def test_int8_quantisation_fuses_qkv_and_stays_close(tiny_encoder):
    """--quantize int8: every Linear (the fused q/k/v included) becomes a dynamic int8 Linear
    with per-channel weight scales; outputs stay near the float model's; CPU only."""
    import torch

    from minbert.errors import ConfigError
    from minbert.inference.predictor import quantize_dynamic_int8
    from minbert.model.bert import BertModel

    torch.manual_seed(0)
    model = BertModel.from_pretrained(tiny_encoder).eval()
    ids = torch.randint(1000, 2000, (4, 12))
    with torch.no_grad():
        want = model(ids).last_hidden_state
        q = quantize_dynamic_int8(model, "int8", torch.device("cpu"))
        got = q(ids).last_hidden_state
    linears = [m for m in q.modules() if type(m).__name__ == "Linear"]
    assert linears and all(type(m).__module__.startswith("torch.ao.nn.quantized") for m in linears)
    assert not any(isinstance(m, torch.nn.Linear) for m in q.modules())  # no float Linear left
    qkv = q.encoder.layer[0].attention.self.qkv
    assert qkv.weight().qscheme() == torch.per_channel_affine
    err = (got - want).abs().max().item()
    assert 0 < err < 0.1 * want.abs().max().item()  # changed (int8), but close
    with pytest.raises(ConfigError, match="only 'int8'"):
        quantize_dynamic_int8(model, "int4", torch.device("cpu"))
    with pytest.raises(ConfigError, match="CPU only"):
        quantize_dynamic_int8(model, "int8", torch.device("cuda"))


@pytest.mark.skipif(not os.path.isdir("/proc/self"), reason="needs Linux's /proc, where no file can be made")
def test_cli_prediction_to_a_folder_where_no_file_can_be_made_is_one_line_exit_2(run, tmp_path, capsys):
    """/proc takes no new files: the write fails with ENOENT, which is the user's path, not a bug."""
    from minbert.cli import main

    src = tmp_path / "in.csv"
    src.write_text("id,sentence\n1,a fine film\n")
    code = main(["predict", str(run.run_dir), "--task=sst", f"--input={src}", "--output=/proc/minbert-out.csv",
                 "--device=cpu"])
    err = capsys.readouterr().err.strip().splitlines()  # the progress bar's lines, then the error
    assert code == 2 and err[-1] == "error: /proc/minbert-out.csv: No such file or directory", err
    assert not any(line.startswith(("Traceback", "error")) for line in err[:-1]), err
