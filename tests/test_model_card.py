"""Model cards: training ends with a README.md in the run folder whose YAML metadata carries the
run's real dev scores, data SHA-256 sums and command; odd names and broken records still give
a card that parses."""

from __future__ import annotations

import json
import logging
import shlex
import shutil

import pytest
import yaml

from minbert_testkit import shared_run


@pytest.fixture(scope="module")
def run(tiny_encoder, data_dir, tmp_path_factory):
    return shared_run(tiny_encoder, data_dir, tmp_path_factory)


def front_matter(path) -> tuple[dict, str]:
    text = path.read_text(encoding="utf-8")
    assert text.startswith("---\n")
    head, body = text[4:].split("\n---\n", 1)
    return yaml.safe_load(head), body


def test_training_writes_a_model_card_into_the_run_folder(run, tiny_encoder):
    meta, body = front_matter(run.run_dir / "README.md")
    summary = json.loads((run.run_dir / "summary.json").read_text())
    prov = json.loads((run.run_dir / "provenance.json").read_text())
    assert meta["base_model"] == str(tiny_encoder) and meta["library_name"] == "minbert" and "license" not in meta
    assert meta["datasets"] == ["stanfordnlp/sst", "nyu-mll/glue"]
    assert meta["metrics"] == ["accuracy", "f1", "pearsonr", "spearmanr"]
    assert meta["minbert"]["dev"] == summary["dev"] and set(summary["dev"]) == {
        "sst_acc",
        "qqp_acc",
        "sts_pearson",
        "para_acc",
        "overall",
    }
    assert meta["minbert"]["data_sha256"] == prov["data_sha256"] and len(prov["data_sha256"]) == 11
    assert meta["minbert"]["command"] == shlex.join(prov["command"]) and meta["minbert"]["git_sha"] == prov["git_sha"]
    assert meta["minbert"]["weights"] == "checkpoints/best/model.safetensors"
    [index] = meta["model-index"]
    got = {(r["task"]["name"], m["name"]): m["value"] for r in index["results"] for m in r["metrics"]}
    assert got == {
        ("sst", "dev accuracy"): summary["dev_all"]["sst_acc"],
        ("qqp", "dev accuracy"): summary["dev_all"]["qqp_acc"],
        ("qqp", "dev F1"): summary["dev_all"]["qqp_f1"],
        ("sts", "dev Pearson r"): summary["dev_all"]["sts_pearson"],
        ("sts", "dev Spearman rho"): summary["dev_all"]["sts_spearman"],
        ("para", "dev accuracy"): summary["dev_all"]["para_acc"],
        ("para", "dev macro F1"): summary["dev_all"]["para_macro_f1"],
    }
    # the built-in tasks were scored on seeded dev samples (dev_limit), the custom one on its whole dev file
    names = {r["task"]["name"]: r["dataset"]["name"] for r in index["results"]}
    assert summary["dev_limits"] == {"sst": 16, "qqp": 16, "sts": 16}
    assert all(names[t].endswith("dev split, a seeded sample of 16 rows") for t in ("sst", "qqp", "sts"))
    assert names["para"].endswith("dev split")
    lines = body.splitlines()
    note = "- sst: scored on a seeded sample of 16 dev rows, not the whole dev split (`minbert evaluate RUN --full`)."
    assert note in lines
    assert not any(line.startswith("- para: scored on a seeded sample") for line in lines)
    assert (
        "- sst: no task folder (head 'baseline' with pooling 'cls': BertForSequenceClassification reads the "
        "pooler output; use minbert.load)" in lines
    )
    assert (
        "- qqp: no task folder (bi-encoder head 'baseline' has no exact transformers equivalent; use minbert.load)"
        in lines
    )
    assert f"model = minbert.load({str(run.run_dir)!r})" in lines
    for name, digest in prov["data_sha256"].items():
        assert f"| {name} | `{digest}` |" in lines


def test_a_card_parses_whatever_the_run_name_and_without_its_records(run, tmp_path, caplog):
    from minbert.inference.model_card import write_model_card

    d = tmp_path / "run"
    shutil.copytree(run.run_dir / "encoder", d / "encoder")
    raw = yaml.safe_load((run.run_dir / "config.yaml").read_text())
    name = "a: b\n---\n| x | `y` ``` # z"
    raw["name"], raw["model"]["encoder"] = name, "default"
    (d / "config.yaml").write_text(yaml.safe_dump(raw))
    (d / "summary.json").write_text("{not json")  # provenance.json: none
    with caplog.at_level(logging.WARNING, logger="minbert.inference.model_card"):
        path = write_model_card(d)
    assert path == d / "README.md"
    meta, body = front_matter(path)
    assert meta["base_model"] == "sentence-transformers/all-MiniLM-L6-v2" and meta["license"] == "apache-2.0"
    assert "model-index" not in meta and "metrics" not in meta
    assert meta["minbert"] == {
        "run": name,
        "weights": None,
        "command": None,
        "git_sha": None,
        "data_sha256": {},
        "dev": {},
    }
    assert body.splitlines()[1] == "# a: b --- \\| x \\| `y` ``` # z"
    assert (
        "The training command was not recorded." in body and "The data files' SHA-256 sums were not recorded." in body
    )
    assert "| sst | classification | baseline | cls | single | not recorded |" in body
    assert [r.getMessage().split(" (")[0] for r in caplog.records] == [f"{d / 'summary.json'}: cannot read it"]


@pytest.mark.parametrize(
    "argv, shown",
    [
        (["/tmp/venv/bin/minbert", "train", "--config", "c.yaml"], "minbert train --config c.yaml"),
        (["/x/src/minbert/__main__.py", "train", "--optim.lr=2e-5"], "minbert train --optim.lr=2e-5"),
        (["/usr/bin/pytest", "-q", "a b"], "/usr/bin/pytest -q 'a b'"),
        (["/x/site-packages/pytest/__main__.py", "-q"], "/x/site-packages/pytest/__main__.py -q"),
    ],
)
def test_the_card_shows_the_command_as_typed(run, tmp_path, argv, shown):
    from minbert.inference.model_card import write_model_card

    d = tmp_path / "run"
    shutil.copytree(run.run_dir, d)
    prov = json.loads((d / "provenance.json").read_text())
    (d / "provenance.json").write_text(json.dumps({**prov, "command": argv}))
    meta, body = front_matter(write_model_card(d))
    assert meta["minbert"]["command"] == shown and shown in body
