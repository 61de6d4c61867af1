"""minbert ablate: row configs follow the parent chain, rows run and are read back, the report
holds each row's scores and differences, and --final trains the best row per seed."""

from __future__ import annotations

import json
import re
import statistics
from pathlib import Path

import pytest
import yaml

from minbert.errors import ConfigError
from minbert.experiments.ablation import load_ablation, run_ablation

REPO = Path(__file__).resolve().parents[1]


def write(tmp_path, rows, final=None):
    base = REPO / "configs" / "default.yaml"
    doc = {"base": str(base), "common": ["train.epochs=1"], "rows": rows}
    if final:
        doc["final"] = final
    p = tmp_path / "ab.yaml"
    p.write_text(yaml.safe_dump(doc))
    return p


def test_the_shipped_ablation_loads_and_chains():
    ab = load_ablation(REPO / "configs" / "beyond" / "ablation.yaml")
    assert [r.name for r in ab.chain("llrd")] == ["exp07", "recipe", "cross", "cross-mean", "phrases", "swap", "llrd"]
    assert ab.final_row == "rdrop" and ab.final_preset is None
    c = ab.config("llrd")
    assert c.tasks["qqp"].pair_input == "cross" and c.tasks["sts"].pooling == "mean" and c.optim.layer_lr_decay == 0.9
    assert c.train.epochs == 3 and c.train.smart_weight == 0.0  # own override beats common; side rows not inherited
    assert ab.config("smart").train.smart_weight == 1.0
    assert ab.config("exp07", seed=2).train.seed == 2


def test_bad_ablation_files(tmp_path):
    with pytest.raises(ConfigError, match="parent 'nope'"):
        load_ablation(write(tmp_path, [{"name": "a", "parent": "nope"}]))
    with pytest.raises(ConfigError, match="twice"):
        load_ablation(write(tmp_path, [{"name": "a"}, {"name": "a"}]))
    with pytest.raises(ConfigError, match=r"ab.yaml: row 'a': .*optim.nope"):  # the ablation file and row are named
        load_ablation(write(tmp_path, [{"name": "a", "overrides": ["optim.nope=1"]}]))
    with pytest.raises(ConfigError, match=r"row 1: unknown key\(s\) \['overide'\]"):
        load_ablation(write(tmp_path, [{"name": "a", "overide": ["optim.lr=1"]}]))
    with pytest.raises(ConfigError, match="row 1: expected a mapping"):
        load_ablation(write(tmp_path, [5]))
    with pytest.raises(ConfigError, match="needs a 'name'"):
        load_ablation(write(tmp_path, [{"name": ["x"]}]))
    with pytest.raises(ConfigError, match="expected a list of overrides"):
        load_ablation(write(tmp_path, [{"name": "a", "overrides": "train.epochs=1"}]))
    with pytest.raises(ConfigError, match="final: expected a mapping"):
        load_ablation(write(tmp_path, [{"name": "a"}], final=["a"]))
    with pytest.raises(ConfigError, match="final.seeds"):
        load_ablation(write(tmp_path, [{"name": "a"}], final={"row": "a", "seeds": ["x"]}))
    for final, fragment in [
        ({"row": "a", "sedes": [0]}, r"final: unknown key\(s\) \['sedes'\]"),
        ({"row": None}, "final.row: expected a row name"),
        ({"row": "a", "seeds": [0, 0]}, "final.seeds: expected a list of distinct integers >= 0"),
        ({"row": "a", "seeds": [-1]}, "final.seeds"),
        ({"row": "a", "preset": ""}, "final.preset"),
    ]:
        with pytest.raises(ConfigError, match=fragment):
            load_ablation(write(tmp_path, [{"name": "a"}], final=final))
    doc = {"base": str(REPO / "configs" / "default.yaml"), "rows": [{"name": "a"}], "final": []}
    (tmp_path / "empty-final.yaml").write_text(yaml.safe_dump(doc))
    with pytest.raises(ConfigError, match="final: expected a mapping"):  # an empty list is not a mapping either
        load_ablation(tmp_path / "empty-final.yaml")


def test_ablate_cli_flag_errors(tmp_path):
    from minbert.cli import main

    path = REPO / "configs" / "beyond" / "ablation.yaml"
    assert main(["ablate", str(path), "--seeds", "0,1", "--runs-root", str(tmp_path)]) == 2  # --seeds needs --final
    assert main(["ablate", str(path), "--final", "--seeds", "0,x", "--runs-root", str(tmp_path)]) == 2
    assert not any(tmp_path.iterdir())  # nothing was trained


def test_rows_run_report_and_final(tmp_path, tiny_encoder, data_dir):
    rows = [
        {"name": "a", "change": "base"},
        {"name": "b", "parent": "a", "change": "higher lr |x|", "source": "test", "overrides": ["optim.lr=1e-3"]},
    ]
    path = write(tmp_path, rows, final={"row": "auto", "seeds": [0, 1]})
    extra = [f"model.encoder={tiny_encoder}", "train.device=cpu", "output.test_predictions=false", "output.plot=false",
             "output.report_to=none",
             *[f"tasks.{t}.{k}={v}"
               for t in ("sst", "qqp", "sts") for k, v in (("train_limit", 32), ("dev_limit", 32), ("batch_size", 16))]]
    report = run_ablation(path, tmp_path / "runs", tmp_path / "rep", data_dir=data_dir, extra=extra)
    a, b = report["rows"]
    sa = json.loads((tmp_path / "runs" / "a" / "summary.json").read_text())
    sb = json.loads((tmp_path / "runs" / "b" / "summary.json").read_text())
    assert a["dev"]["overall"] == sa["dev"]["overall"] and b["dev"]["overall"] == sb["dev"]["overall"]
    assert sb["config"]["optim"]["lr"] == 1e-3 and sa["config"]["optim"]["lr"] == 1e-5
    assert b["delta_overall"] == pytest.approx(sb["dev"]["overall"] - sa["dev"]["overall"], abs=1e-4)
    assert report["final"] is None
    # --final: the better row, once per seed; mean and std over the seeds
    report = run_ablation(path, tmp_path / "runs", tmp_path / "rep", data_dir=data_dir, extra=extra, final=True)
    f = report["final"]
    assert f["row"] == ("b" if sb["dev"]["overall"] > sa["dev"]["overall"] else "a") and f["seeds"] == [0, 1]
    vals = [d["overall"] for d in f["per_seed"]]
    assert f["overall_mean"] == pytest.approx(sum(vals) / 2)
    md = (tmp_path / "rep" / "beyond.md").read_text()
    assert "| b | a | higher lr \\|x\\| |" in md and "mean ± std" in md  # a | in a cell is escaped
    assert (tmp_path / "rep" / "beyond-best.yaml").is_file()
    assert (tmp_path / "rep" / "beyond.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # the report's JSON: rows[i].{name, preset, seeds, dev}, best.{preset, seeds, dev_mean, dev_std}
    saved = json.loads((tmp_path / "rep" / "beyond.json").read_text())
    assert [(r["name"], r["seeds"], r["preset"].endswith(f"ab.yaml#{r['name']}")) for r in saved["rows"]] == [
        ("a", 1, True), ("b", 1, True)]
    best = saved["best"]
    assert best["seeds"] == [0, 1] and best["preset"].endswith(f"#{f['row']}")
    assert best["dev_mean"]["overall"] == pytest.approx(f["overall_mean"])
    assert best["dev_std"]["sst_acc"] == pytest.approx(statistics.stdev([d["sst_acc"] for d in f["per_seed"]]))
    # --report-only trains nothing and includes the hand-written notes
    (tmp_path / "rep" / "beyond_notes.md").write_text("Why b is better.\n")
    stamps = {p: p.stat().st_mtime_ns for p in (tmp_path / "runs").rglob("*") if p.is_file()}
    again = run_ablation(path, tmp_path / "runs", tmp_path / "rep", data_dir=data_dir, extra=extra, report_only=True)
    assert again["best"] == best
    assert {p: p.stat().st_mtime_ns for p in (tmp_path / "runs").rglob("*") if p.is_file()} == stamps
    assert "## Discussion\n\nWhy b is better." in (tmp_path / "rep" / "beyond.md").read_text()
    with pytest.raises(ConfigError, match="report-only"):
        run_ablation(path, tmp_path / "runs", tmp_path / "rep", report_only=True, final=True)


def test_best_preset_is_the_ablation_export_heads_row():
    """configs/best.yaml is the resolved row export-heads of the shipped ablation (name and the
    encoder folder aside), so `minbert train --config configs/best.yaml` reproduces it, and every
    one of its tasks exports to a transformers / sentence-transformers folder."""
    from minbert.config import load_config, replace, resolve, to_dict
    from minbert.inference.export import plan_exports

    ab = load_ablation(REPO / "configs" / "beyond" / "ablation.yaml")
    want = resolve(ab.config("export-heads"))
    got = load_config(REPO / "configs" / "best.yaml")
    want = replace(want, name="best", model=replace(want.model, encoder="default"))
    assert to_dict(got) == to_dict(want)
    assert all(e.library is not None for e in plan_exports(got).values())


def test_rows_without_a_run_keep_their_record_from_the_previous_report(tmp_path):
    """Rows run elsewhere merge through the report: a row with no run under the runs root keeps
    its earlier record when its parent and overrides are unchanged, and loses it otherwise."""
    from minbert.experiments.ablation import build_report

    rows = [
        {"name": "a", "change": "base"},
        {"name": "b", "parent": "a", "change": "lr", "overrides": ["optim.lr=1e-3"]},
        {"name": "c", "parent": "a", "change": "wd", "overrides": ["optim.weight_decay=0.1"]},
    ]
    ab = load_ablation(write(tmp_path, rows, final={"row": "b", "seeds": [0, 1]}))

    def rec(name, parent, overrides, overall):
        return {"name": name, "parent": parent, "overrides": overrides, "seeds": 1, "dev": {"overall": overall},
                "delta_overall": 9.0}

    dev = [{"sst_acc": 0.5, "qqp_acc": 0.8, "sts_pearson": 0.6, "overall": 0.7},
           {"sst_acc": 0.4, "qqp_acc": 0.7, "sts_pearson": 0.5, "overall": 0.6}]
    previous = {
        "base": "default.yaml", "common": ["train.epochs=1"],  # as every report names them
        "rows": [rec("a", None, [], 0.5), rec("b", "a", ["optim.lr=1e-3"], 0.75), rec("c", "a", ["optim.lr=2"], 0.9)],
        "final": {"row": "b", "seeds": [0, 1], "per_seed": dev},
    }
    report = build_report(ab, tmp_path / "no-runs", previous)
    a, b, c = report["rows"]
    assert a["dev"] == {"overall": 0.5} and b["dev"] == {"overall": 0.75}
    assert b["delta_overall"] == 0.25  # recomputed, not copied
    assert c["dev"] is None and c["overrides"] == ["optim.weight_decay=0.1"]  # its config changed: not kept
    assert report["final"]["seeds"] == [0, 1] and report["final"]["overall_mean"] == pytest.approx(0.65)
    assert report["best"]["dev_std"]["sst_acc"] == pytest.approx(statistics.stdev([0.5, 0.4]))
    other = load_ablation(write(tmp_path, rows, final={"row": "c", "seeds": [0]}))
    assert build_report(other, tmp_path / "no-runs", previous)["final"] is None  # another final row


def test_chart_bars_are_the_deltas_against_the_parents():
    from matplotlib.colors import to_hex

    from minbert.experiments.ablation import plot_ablation

    rows = [("a", None, None), ("b", "a", 0.0123), ("c", "b", -0.0341), ("d", "b", None), ("e", "a", 0.0)]
    report = {"ablation": "ab.yaml", "rows": [{"name": n, "parent": p, "delta_overall": d} for n, p, d in rows]}
    fig = plot_ablation(report)
    (ax,) = fig.axes
    bars = [p for p in ax.patches if (p.get_gid() or "").startswith("delta/")]
    assert [b.get_gid() for b in bars] == ["delta/b", "delta/c", "delta/e"]  # rows without a delta left out
    assert [b.get_width() for b in bars] == [0.0123, -0.0341, 0.0]
    assert [b.get_x() for b in bars] == [0.0, 0.0, 0.0]
    assert [t.get_text() for t in ax.get_yticklabels()] == ["b", "c", "e"]
    centers = [b.get_y() + b.get_height() / 2 for b in bars]
    assert [t.get_position()[1] for t in ax.get_yticklabels()] == centers
    assert ax.yaxis_inverted()  # the report's first row on top
    assert [to_hex(b.get_facecolor()) for b in bars] == ["#2ca02c", "#d62728", "#2ca02c"]  # gains / losses
    assert [t.get_text() for t in ax.texts] == ["+0.012", "-0.034", "+0.000"]
    empty = plot_ablation({"ablation": "ab.yaml", "rows": [{"name": "a", "parent": None, "delta_overall": None}]})
    assert not [p for p in empty.axes[0].patches if p.get_gid()]


def test_report_only_draws_the_chart_of_the_report(tmp_path, monkeypatch):
    """Rows kept from an earlier report (nothing trains): NAME.png beside NAME.json, its bars the deltas."""
    from minbert.experiments import ablation

    rows = [
        {"name": "a", "change": "base"},
        {"name": "b", "parent": "a", "change": "lr", "overrides": ["optim.lr=1e-3"]},
        {"name": "c", "parent": "b", "change": "wd", "overrides": ["optim.weight_decay=0.1"]},
    ]
    path = write(tmp_path, rows)
    rep = tmp_path / "rep"
    rep.mkdir()
    previous = [("a", None, [], 0.60), ("b", "a", ["optim.lr=1e-3"], 0.65),
                ("c", "b", ["optim.weight_decay=0.1"], 0.62)]
    (rep / "ab.json").write_text(json.dumps({"base": "default.yaml", "common": ["train.epochs=1"], "rows": [
        {"name": n, "parent": p, "overrides": o, "seeds": 1, "dev": {"overall": v}, "change": "", "source": "",
         "epochs": 1}
        for n, p, o, v in previous]}))
    figures, write_png = {}, ablation.atomic_write_png

    def spy(p, fig, tight=False):
        figures[p.name] = fig
        write_png(p, fig, tight)

    monkeypatch.setattr(ablation, "atomic_write_png", spy)
    report = run_ablation(path, tmp_path / "no-runs", rep, report_only=True, report_name="ab")
    assert [r["delta_overall"] for r in report["rows"]] == [None, 0.05, -0.03]
    assert (rep / "ab.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    bars = [p for p in figures["ab.png"].axes[0].patches if (p.get_gid() or "").startswith("delta/")]
    assert [(b.get_gid(), b.get_width()) for b in bars] == [("delta/b", 0.05), ("delta/c", -0.03)]


# ----------------------------------------------------------------------------------------------
# merging an earlier report: what it may hold, and what changed since


CHAIN = [
    {"name": "a", "change": "base"},
    {"name": "b", "parent": "a", "change": "lr", "overrides": ["optim.lr=1e-3"]},
    {"name": "c", "parent": "b", "change": "wd", "overrides": ["optim.weight_decay=0.1"]},
]
DEV = {"sst_acc": 0.5, "qqp_acc": 0.8, "sts_pearson": 0.6, "overall": 0.7}


def earlier_report(ab, rows=CHAIN, **top) -> dict:
    """The report that build_report would have written for ``rows`` all run (overall 0.6, 0.65, 0.62),
    with the final row c over seeds 0 and 1; ``top`` replaces top-level keys."""
    from minbert.experiments.ablation import build_report

    report = build_report(ab, Path("/nonexistent"))
    for rec, overall in zip(report["rows"], (0.6, 0.65, 0.62), strict=True):
        rec.update(seeds=1, dev={**DEV, "overall": overall}, epochs=1, steps=10, best_epoch=1, wall_s=1.0)
    report["rows"] = [{**rec, "parent": r.get("parent"), "overrides": r.get("overrides", [])}
                      for rec, r in zip(report["rows"], rows, strict=True)]
    report["final"] = {"row": "c", "seeds": [0, 1], "per_seed": [DEV, {**DEV, "overall": 0.5}]}
    return {**report, **top}


def merged(tmp_path, rows, previous, final=None) -> dict:
    """``minbert ablate --report-only`` of ``rows`` with ``previous`` as the report on disk (no runs)."""
    from minbert.experiments.ablation import run_ablation

    path = write(tmp_path, rows, final=final)
    rep = tmp_path / "rep"
    rep.mkdir(exist_ok=True)
    (rep / "beyond.json").write_text(previous if isinstance(previous, str) else json.dumps(previous))
    try:
        return run_ablation(path, tmp_path / "no-runs", rep, report_only=True)
    except ConfigError as e:
        assert "no finished runs" in str(e)  # nothing kept: the one refusal --report-only has
        return {"rows": [], "final": None}


def kept(report) -> dict:
    return {r["name"]: r["dev"]["overall"] for r in report["rows"] if r["dev"]}


def test_the_earlier_report_merges_whole(tmp_path):
    ab = load_ablation(write(tmp_path, CHAIN, final={"row": "c"}))
    report = merged(tmp_path, CHAIN, earlier_report(ab), final={"row": "c"})
    assert kept(report) == {"a": 0.6, "b": 0.65, "c": 0.62}
    assert [r["delta_overall"] for r in report["rows"]] == [None, 0.05, -0.03]
    assert report["final"]["row"] == "c" and report["final"]["overall_mean"] == pytest.approx(0.6)


@pytest.mark.parametrize(
    "text",
    ['{"rows": [', "", "null", "[1, 2]", '"report"', '{"rows": 5}', '{"rows": "abc", "final": 3}',
     '{"rows": [null, 3, "x", [], {"name": 5}, {"name": "a"}], "final": {"row": "c"}}',
     '{"rows": [{"name": "a", "dev": [0.5]}], "final": {"row": "c", "seeds": [0, 1], "per_seed": [1]}}',
     '{"rows": [{"name": "a", "dev": "0.5"}], "final": {"row": "c", "seeds": 2, "per_seed": {}}}',
     '{"rows": [{"name": "a", "dev": {"overall": "high"}}], "final": {"row": ["c"], "seeds": [0], "per_seed": [{}]}}'],
)
def test_a_corrupt_or_foreign_earlier_report_keeps_nothing_and_never_crashes(tmp_path, text):
    report = merged(tmp_path, CHAIN, text, final={"row": "c"})
    assert kept(report) == {} and report["final"] is None


def damaged(ab, where: str) -> dict:
    """An earlier report with one record's values of the wrong types."""
    prev = earlier_report(ab)
    rows = {r["name"]: r for r in prev["rows"]}
    if where == "dev list":
        rows["b"]["dev"] = [0.1, 0.2]
    elif where == "overall null":
        rows["b"]["dev"] = {**DEV, "overall": None}
    elif where == "overall text":
        rows["b"]["dev"] = {**DEV, "overall": "0.65"}
    elif where == "overall bool":
        rows["b"]["dev"] = {**DEV, "overall": True}
    elif where == "fields missing":
        for k in set(rows["b"]) - {"name", "parent", "overrides", "dev"}:
            del rows["b"][k]
    elif where == "fields of other types":
        rows["b"].update(epochs=[1], steps="10", change=None, source=5, seeds=None, steps_per_epoch={})
    elif where == "overrides null":
        rows["b"]["overrides"] = None
    elif where == "per_seed short":
        prev["final"]["per_seed"] = prev["final"]["per_seed"][:1]
    elif where == "per_seed values":
        prev["final"]["per_seed"] = [None, {"overall": "x"}]
    return prev


@pytest.mark.parametrize("where", ["dev list", "overall null", "overall text", "overall bool", "fields missing",
                                   "fields of other types", "overrides null", "per_seed short", "per_seed values"])
def test_records_of_the_wrong_types_are_dropped_or_mended_never_a_crash(tmp_path, where):
    ab = load_ablation(write(tmp_path, CHAIN, final={"row": "c"}))
    report = merged(tmp_path, CHAIN, damaged(ab, where), final={"row": "c"})
    md = (tmp_path / "rep" / "beyond.md").read_text()
    b = report["rows"][1]
    assert (b["name"], b["change"], b["source"], b["parent"]) == ("b", "lr", "", "a")  # from the file, always
    if where in ("dev list", "overall text", "overall bool"):  # b has no scores; c's chain is known
        assert kept(report) == {"a": 0.6, "c": 0.62} and "| b | a | lr |" in md
        assert b["delta_overall"] is None and report["rows"][2]["delta_overall"] is None
    elif where == "overrides null":  # b's config is not known, nor is c's (b is its parent)
        assert kept(report) == {"a": 0.6} and report["rows"][2]["delta_overall"] is None
    elif where == "overall null":
        assert b["dev"]["overall"] is None and b["delta_overall"] is None and report["rows"][2]["delta_overall"] is None
    elif where in ("fields missing", "fields of other types"):
        assert kept(report)["b"] == 0.65 and b["delta_overall"] == 0.05
        assert b["seeds"] == 1 and b["epochs"] is None and b["steps"] is None  # mended, not copied
    if where.startswith("per_seed"):
        assert report["final"] is None and kept(report) == {"a": 0.6, "b": 0.65, "c": 0.62}
    else:
        assert (report["final"] is not None) == (where != "overrides null")  # the final row is c


@pytest.mark.parametrize(
    "change",
    ["parent's overrides", "common", "base preset", "parent renamed", "row renamed", "final row", "new row between"],
)
def test_a_record_whose_config_changed_is_never_kept(tmp_path, change):
    """b's record depends on a; c's on b and a (the chain), all on the base preset and common."""
    ab = load_ablation(write(tmp_path, CHAIN, final={"row": "c"}))
    prev = earlier_report(ab)
    rows, final, want = [dict(r) for r in CHAIN], {"row": "c"}, {}
    if change == "parent's overrides":  # a now sets the lr: b and c ran on another a
        rows[0]["overrides"] = ["optim.weight_decay=0.2"]
    elif change == "common":
        prev["common"] = ["train.epochs=2"]
    elif change == "base preset":
        prev["base"] = "quick.yaml"
    elif change == "parent renamed":  # b -> b2: c's parent is b2, which never ran
        rows[1]["name"], rows[2]["parent"] = "b2", "b2"
        want = {"a": 0.6}
    elif change == "row renamed":  # c -> c2 (the final row too)
        rows[2]["name"], final = "c2", {"row": "c2"}
        want = {"a": 0.6, "b": 0.65}
    elif change == "final row":  # the final row is now b: c's final seeds are not b's
        final = {"row": "b"}
        want = {"a": 0.6, "b": 0.65, "c": 0.62}
    elif change == "new row between":  # c's parent is now x (a child of b)
        rows.insert(2, {"name": "x", "parent": "b", "change": "x", "overrides": ["optim.warmup_ratio=0.1"]})
        rows[3]["parent"] = "x"
        want = {"a": 0.6, "b": 0.65}
    report = merged(tmp_path, rows, prev, final=final)
    assert kept(report) == want
    assert report["final"] is None


def test_an_edited_base_preset_drops_every_record(tmp_path):
    base = tmp_path / "base.yaml"
    base.write_text("train: {epochs: 2}\n")
    doc = {"base": str(base), "rows": CHAIN}
    (tmp_path / "ab.yaml").write_text(yaml.safe_dump(doc))
    from minbert.experiments.ablation import build_report

    ab = load_ablation(tmp_path / "ab.yaml")
    prev = earlier_report(ab)
    assert kept(build_report(ab, tmp_path / "no-runs", prev)) == {"a": 0.6, "b": 0.65, "c": 0.62}
    base.write_text("train: {epochs: 3}\n")  # the same file name, another config
    assert kept(build_report(load_ablation(tmp_path / "ab.yaml"), tmp_path / "no-runs", prev)) == {}


def test_ablation_rows_with_a_key_twice_or_a_name_that_is_no_folder_are_refused(tmp_path):
    """A row name is its run folder's name; a key given twice would let the later win silently."""
    for name in ("../../escaped", ".", "a/b"):
        with pytest.raises(ConfigError, match=rf"row 1: name {re.escape(repr(name))} must be a folder name"):
            load_ablation(write(tmp_path, [{"name": name}]))
    path = write(tmp_path, [{"name": "a"}])
    path.write_text(path.read_text().replace("- name: a", "- name: a\n  overrides: [optim.lr=1.0e-4]\n  overrides: []"))
    with pytest.raises(ConfigError, match="duplicate key 'overrides'"):
        load_ablation(path)
