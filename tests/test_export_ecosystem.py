"""``minbert export``'s task folders: transformers pipelines, sentence-transformers' CrossEncoder
and SentenceTransformer load each exactly exportable head and reproduce ``minbert.load``'s
outputs; a head without an exact equivalent gets no folder and a reason."""

from __future__ import annotations

import json
import logging
import shutil

import numpy as np
import pytest
import sentence_transformers
import torch
import transformers
import yaml

import minbert
from minbert.cli import main
from minbert.config import from_dict
from minbert.inference import export as export_mod
from minbert.inference.export import export_run
from minbert.training.trainer import train
from minbert_testkit import NAMES, base_config, para_definition, para_dir

TEXTS = ["a gorgeous, witty film", "dull and lifeless", "it is a movie, with a plot that goes on and on for ever"]
PAIRS = [
    ("A man is playing a guitar.", "A man plays the guitar."),
    ("How do I cook rice?", "What is the capital of France?"),
    ("the cat sat on the mat", "a dog ran in the old house"),
]
SMALL = {"train_limit": 16, "dev_limit": 16, "batch_size": 8}
POOLER = {"head": "baseline", "pooling": "pooler"}
CROSS = POOLER | {"pair_input": "cross"}


def _train(tiny_encoder, data_dir, tmp_path_factory, name: str, tasks: dict, custom: dict | None = None):
    raw = base_config(tiny_encoder) | {"name": name, "tasks": tasks}
    if custom:
        raw["custom_tasks"] = custom
    return train(from_dict(raw), run_dir=tmp_path_factory.mktemp(name) / "run", data_dir=data_dir, progress=False)


@pytest.fixture(scope="module")
def cross_run(tiny_encoder, data_dir, tmp_path_factory):
    """Every head exportable: sst, qqp, sts and the custom pair task "para" as baseline heads on the pooler."""
    tasks = {"sst": SMALL | POOLER, "qqp": SMALL | CROSS, "sts": SMALL | CROSS, "para": {"batch_size": 8} | CROSS}
    return _train(
        tiny_encoder, data_dir, tmp_path_factory, "cross", tasks, {"para": para_definition(para_dir(tmp_path_factory))}
    )


@pytest.fixture(scope="module")
def bi_run(tiny_encoder, data_dir, tmp_path_factory):
    """A bi-encoder cosine sts head (exportable) beside two heads that are not."""
    tasks = {
        "sst": SMALL | {"head": "mean", "pooling": "mean"},
        "qqp": SMALL | CROSS | {"symmetric_eval": True},
        "sts": SMALL | {"head": "cosine", "pooling": "mean", "pair_input": "bi"},
    }
    return _train(tiny_encoder, data_dir, tmp_path_factory, "bi", tasks)


@pytest.fixture(scope="module")
def cross_export(cross_run, tmp_path_factory):
    out = tmp_path_factory.mktemp("cross-export") / "out"
    assert main(["export", str(cross_run.run_dir), str(out)]) == 0
    return out


def _front_matter(path) -> dict:
    text = path.read_text(encoding="utf-8")
    assert text.startswith("---\n")
    return yaml.safe_load(text.split("\n---\n", 1)[0][4:])


def test_every_pooler_head_becomes_a_sequence_classification_folder(cross_export):
    assert sorted(p.name for p in (cross_export / "tasks").iterdir()) == ["para", "qqp", "sst", "sts"]
    expect = {
        "sst": (
            5,
            "single_label_classification",
            ["negative", "somewhat negative", "neutral", "somewhat positive", "positive"],
        ),
        "qqp": (1, "multi_label_classification", ["is_duplicate"]),
        "sts": (1, "regression", ["similarity"]),
        "para": (2, "single_label_classification", NAMES),
    }
    for task, (n, problem, labels) in expect.items():
        folder = cross_export / "tasks" / task
        model, info = transformers.BertForSequenceClassification.from_pretrained(str(folder), output_loading_info=True)
        assert (list(info["missing_keys"]), list(info["unexpected_keys"]), list(info["mismatched_keys"])) == (
            [],
            [],
            [],
        )
        cfg = model.config
        assert (cfg.num_labels, cfg.problem_type) == (n, problem)
        assert [cfg.id2label[i] for i in range(n)] == labels and cfg.label2id == {
            name: i for i, name in enumerate(labels)
        }
        raw = json.loads((folder / "config.json").read_text())
        assert raw["architectures"] == ["BertForSequenceClassification"]
        sigmoid = {"activation_fn": "torch.nn.modules.activation.Sigmoid"}
        assert raw.get("sentence_transformers") == (sigmoid if task in ("qqp", "sts") else None)
        assert json.loads((folder / "tokenizer_config.json").read_text())["model_max_length"] == 128
        assert not (folder / "modules.json").exists() and not list(folder.glob(".*"))


def test_pipeline_gives_the_sentiment_probabilities(cross_export, cross_run):
    pred = minbert.load(cross_run.run_dir, device="cpu")
    ours, names = pred.sentiment(TEXTS), pred.task("sst").label_names
    classify = transformers.pipeline(
        "text-classification", model=str(cross_export / "tasks" / "sst"), top_k=None, device="cpu"
    )
    theirs = [{d["label"]: d["score"] for d in row} for row in classify(TEXTS, truncation=True)]
    got = np.array([[row[n] for n in names] for row in theirs])
    want = np.array([s.probabilities for s in ours])
    assert got.shape == (3, 5) and np.abs(want - 0.2).max() > 1e-3  # a trained head, not a uniform one
    np.testing.assert_allclose(got, want, atol=1e-5, rtol=0)


def test_cross_encoder_and_pipeline_give_the_paraphrase_probability(cross_export, cross_run):
    folder = str(cross_export / "tasks" / "qqp")
    want = minbert.load(cross_run.run_dir, device="cpu").paraphrase(PAIRS)
    ce = sentence_transformers.CrossEncoder(folder, device="cpu")
    assert isinstance(ce.activation_fn, torch.nn.Sigmoid)  # the activation the model card names
    np.testing.assert_allclose(ce.predict(PAIRS), want, atol=1e-5, rtol=0)
    classify = transformers.pipeline("text-classification", model=folder, device="cpu")
    out = classify([{"text": a, "text_pair": b} for a, b in PAIRS], truncation=True)
    assert [o["label"] for o in out] == ["is_duplicate"] * 3
    np.testing.assert_allclose([o["score"] for o in out], want, atol=1e-5, rtol=0)
    card = (cross_export / "tasks" / "qqp" / "README.md").read_text()
    assert "`sigmoid(z)`" in card and "CrossEncoder(" in card


def test_cross_encoder_sigmoid_mapped_to_0_5_gives_the_similarity(cross_export, cross_run):
    want = minbert.load(cross_run.run_dir, device="cpu").similarity(PAIRS)
    p = sentence_transformers.CrossEncoder(str(cross_export / "tasks" / "sts"), device="cpu").predict(PAIRS)
    assert p.shape == (3,) and ((p > 0) & (p < 1)).all()
    np.testing.assert_allclose(0 + (5 - 0) * p, want, atol=1e-5, rtol=0)
    classify = transformers.pipeline("text-classification", model=str(cross_export / "tasks" / "sts"), device="cpu")
    out = classify([{"text": a, "text_pair": b} for a, b in PAIRS], truncation=True, function_to_apply="sigmoid")
    np.testing.assert_allclose([0 + (5 - 0) * o["score"] for o in out], want, atol=1e-5, rtol=0)
    card = (cross_export / "tasks" / "sts" / "README.md").read_text()
    assert "`0 + (5 - 0) * sigmoid(z)`" in card and "`0 + (5 - 0) * p`" in card


def test_a_custom_pair_classifier_loads_as_a_cross_encoder(cross_export, cross_run):
    want = [o["probabilities"] for o in minbert.load(cross_run.run_dir, device="cpu").predict("para", PAIRS)]
    ce = sentence_transformers.CrossEncoder(str(cross_export / "tasks" / "para"), device="cpu")
    np.testing.assert_allclose(ce.predict(PAIRS, apply_softmax=True), want, atol=1e-5, rtol=0)


@pytest.fixture(scope="module")
def bi_export(bi_run, tmp_path_factory):
    out = tmp_path_factory.mktemp("bi-export") / "out"
    logger = logging.getLogger("minbert.inference.export")
    records = []
    handler = logging.Handler()
    handler.emit = records.append
    logger.addHandler(handler)
    old = logger.level
    logger.setLevel(logging.INFO)
    try:
        assert main(["export", str(bi_run.run_dir), str(out)]) == 0
    finally:
        logger.removeHandler(handler)
        logger.setLevel(old)
    return out, [r.getMessage() for r in records]


def test_sentence_transformer_encodes_like_embed_normalised(bi_export, bi_run):
    out, _ = bi_export
    folder = out / "tasks" / "sts"
    assert json.loads((folder / "modules.json").read_text())[1]["path"] == "1_Pooling"
    pool = json.loads((folder / "1_Pooling" / "config.json").read_text())
    assert pool["pooling_mode_mean_tokens"] is True and pool["pooling_mode_cls_token"] is False
    assert json.loads((folder / "sentence_bert_config.json").read_text())["max_seq_length"] == 128
    model = sentence_transformers.SentenceTransformer(str(folder), device="cpu")
    pred = minbert.load(bi_run.run_dir, device="cpu")
    got = model.encode(TEXTS)
    want = torch.nn.functional.normalize(torch.from_numpy(pred.embed(TEXTS, pooling="mean")), dim=-1).numpy()
    assert got.shape == (3, 32)
    np.testing.assert_allclose(got, want, atol=1e-5, rtol=0)
    # the cosine head's score from the folder's embeddings
    u, v = model.encode([a for a, _ in PAIRS]), model.encode([b for _, b in PAIRS])
    cos = model.similarity_pairwise(u, v).numpy()
    np.testing.assert_allclose(0 + (5 - 0) * (cos + 1) / 2, pred.similarity(PAIRS), atol=1e-5, rtol=0)


def test_heads_without_an_exact_equivalent_get_no_folder_and_a_reason(bi_export):
    out, messages = bi_export
    assert sorted(p.name for p in (out / "tasks").iterdir()) == ["sts"]
    sst = "sst: no task folder (head 'mean' has no exact transformers equivalent; use minbert.load)"
    qqp = (
        "qqp: no task folder (symmetric_eval averages the outputs of (a, b) and (b, a); "
        "BertForSequenceClassification scores one order; use minbert.load)"
    )
    assert sst in messages and qqp in messages
    card = (out / "README.md").read_text()
    assert f"- {sst}" in card.splitlines() and f"- {qqp}" in card.splitlines()
    # the encoder folder is still the minbert export, and no ecosystem file sits beside it
    assert not (out / "modules.json").exists() and json.loads((out / "config.json").read_text())["architectures"] == [
        "BertModel"
    ]
    assert minbert.load(out, device="cpu").tasks == ["sst", "qqp", "sts"]


def test_export_cards_carry_metadata_and_loading_code(cross_export, cross_run):
    summary = cross_run.summary
    meta = _front_matter(cross_export / "README.md")
    assert meta["library_name"] == "transformers" and meta["minbert"]["dev"] == summary["dev"]
    assert meta["minbert"]["weights"] == "checkpoints/best/model.safetensors"
    task_meta = _front_matter(cross_export / "tasks" / "sts" / "README.md")
    assert task_meta["pipeline_tag"] == "text-classification" and "cross-encoder" in task_meta["tags"]
    assert task_meta["minbert"]["dev"] == {k: v for k, v in summary["dev"].items() if k.startswith("sts_")}
    [result] = task_meta["model-index"][0]["results"]
    assert result["dataset"]["type"] == "nyu-mll/glue" and result["dataset"]["config"] == "stsb"
    assert [(m["type"], m["value"]) for m in result["metrics"]] == [
        ("pearsonr", summary["dev_all"]["sts_pearson"]),
        ("spearmanr", summary["dev_all"]["sts_spearman"]),
    ]
    assert set(task_meta["minbert"]["data_sha256"]) == {"sts-train.csv", "sts-dev.csv", "sts-test-student.csv"}
    assert (
        f"CrossEncoder({str(cross_export / 'tasks' / 'sts')!r})"
        in (cross_export / "tasks" / "sts" / "README.md").read_text()
    )


def test_overwrite_drops_task_folders_of_the_earlier_export(cross_run, bi_run, tmp_path):
    out = tmp_path / "out"
    assert main(["export", str(cross_run.run_dir), str(out)]) == 0
    assert sorted(p.name for p in (out / "tasks").iterdir()) == ["para", "qqp", "sst", "sts"]
    (out / "tasks" / "sts" / "config.json").write_text("{}")
    assert main(["export", str(bi_run.run_dir), str(out), "--overwrite"]) == 0
    assert sorted(p.name for p in (out / "tasks").iterdir()) == ["sts"]
    assert (out / "tasks" / "sts" / "modules.json").is_file()
    assert json.loads((out / "tasks" / "sts" / "config.json").read_text())["architectures"] == ["BertModel"]
    # OUT/tasks as a link to another folder: replaced by a folder, nothing written through the link
    elsewhere = tmp_path / "elsewhere"
    (elsewhere / "sts").mkdir(parents=True)
    (elsewhere / "sts" / "keep.txt").write_text("mine")
    shutil.rmtree(out / "tasks")
    (out / "tasks").symlink_to(elsewhere)
    assert main(["export", str(bi_run.run_dir), str(out), "--overwrite"]) == 0
    assert not (out / "tasks").is_symlink() and sorted(p.name for p in (out / "tasks").iterdir()) == ["sts"]
    assert [p.name for p in elsewhere.rglob("*")] == ["sts", "keep.txt"]


def test_an_unreadable_tokenizer_config_is_one_error_line(cross_run, tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(cross_run.run_dir, run)
    (run / "encoder" / "tokenizer_config.json").write_text("{not json")
    assert main(["export", str(run), str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"error: {run / 'encoder' / 'tokenizer_config.json'}: not valid JSON (")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    "task, options, line",
    [
        ("sst", POOLER, "sst: tasks/sst (transformers)"),
        (
            "sst",
            {"head": "baseline", "pooling": "cls"},
            "sst: no task folder (head 'baseline' with pooling 'cls': "
            "BertForSequenceClassification reads the pooler output; use minbert.load)",
        ),
        (
            "sst",
            {"head": "conv1d", "pooling": "mean"},
            "sst: no task folder (head 'conv1d' has no exact transformers equivalent; use minbert.load)",
        ),
        ("qqp", CROSS | {"augment_swap": True}, "qqp: tasks/qqp (transformers)"),
        (
            "qqp",
            {"head": "sbert", "pooling": "mean"},
            "qqp: no task folder (bi-encoder head 'sbert' has no exact transformers equivalent; use minbert.load)",
        ),
        (
            "sts",
            {"head": "sbert_cosine", "pooling": "cls", "symmetric_eval": True},
            "sts: tasks/sts (sentence-transformers)",
        ),
        (
            "sts",
            {"head": "cosine", "pooling": "pooler"},
            "sts: no task folder (pooling 'pooler' has no sentence-transformers Pooling mode; use minbert.load)",
        ),
        (
            "sts",
            {"head": "cosine", "pooling": "mean", "head_layers": 2},
            "sts: no task folder (head 'cosine' with "
            "head_layers 2 has no exact sentence-transformers equivalent; use minbert.load)",
        ),
        (
            "sts",
            {"head": "compress_expand", "pooling": "mean"},
            "sts: no task folder (bi-encoder head "
            "'compress_expand' has no exact transformers equivalent; use minbert.load)",
        ),
    ],
)
def test_which_heads_map_exactly(task, options, line):
    from minbert.inference.export import plan_exports

    cfg = from_dict({"tasks": {task: options}})
    assert [p.line for p in plan_exports(cfg).values()] == [line]


def test_one_progress_bar_over_every_file_written(cross_run, tmp_path, monkeypatch):
    bars = []

    class Bar:
        def __init__(self, total, **kw):
            self.total, self.n, self.kw = total, 0, kw
            bars.append(self)

        def update(self, n=1):
            self.n += n

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

    monkeypatch.setattr(export_mod, "tqdm", Bar)
    out = export_run(cross_run.run_dir, tmp_path / "out")
    written = [p for p in out.rglob("*") if p.is_file()]
    assert len(bars) == 1 and bars[0].kw["disable"] is False and bars[0].kw["unit"] == "file"
    assert bars[0].total == bars[0].n == len(written) == 9 + 4 * 7


def test_the_export_command_lists_every_file_it_wrote_the_task_folders_included(cross_run, tmp_path, capsys):
    out = tmp_path / "listed"
    assert main(["export", str(cross_run.run_dir), str(out)]) == 0
    printed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    on_disk = sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file())
    assert printed == {"export": str(out), "files": on_disk}
    assert "tasks/sst/config.json" in on_disk and "model.safetensors" in on_disk
