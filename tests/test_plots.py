"""``curves.png`` from a hand-written ``metrics.jsonl``: the moving average, the dev panels' axes,
points and values, several evaluations per epoch, few points, and damaged or empty files."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from minbert.training.plots import moving_average, plot_curves, smoothing_window

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def loss_sst(i: int) -> float:
    return 1.6 - 0.02 * i + 0.15 * ((i * 7) % 5 - 2)


def loss_qqp(i: int) -> float:
    return 0.7 - 0.004 * i + 0.05 * ((i * 3) % 4 - 1.5)


# three evaluations, two of them in epoch 1: (step, epoch, sst_acc, qqp_acc, sts_pearson, overall)
DEV = [(10, 1, 0.30, 0.60, -0.20, 0.4667), (20, 1, 0.35, 0.70, 0.40, 0.5667), (40, 2, 0.412, 0.743, 0.851, 0.6929)]


def write_metrics(run: Path, n_steps: int, dev: list[tuple], epoch_len: int = 20, torn: bool = False) -> None:
    run.mkdir(parents=True, exist_ok=True)
    lines = []
    for i in range(1, n_steps + 1):
        lines.append({"step": i, "epoch": (i - 1) // epoch_len + 1, "lr": 1e-4, "grad_norm": 1.0,
                      "loss/sst": loss_sst(i), "loss/qqp": loss_qqp(i)})
        if i == 15:  # a skipped batch (train.nonfinite=skip): no loss
            lines.append({"step": 15, "skipped": "task sst", "ids": [["a", "b"]]})
        for step, epoch, sst, qqp, sts, overall in dev:
            if step == i:
                flat = {"sst_acc": sst, "qqp_acc": qqp, "qqp_f1": 0.5, "sts_pearson": sts, "sts_spearman": 0.1,
                        "overall": overall}
                lines.append({"step": step, "epoch": epoch, "dev": flat, "dev_detail": {}})
    text = "".join(json.dumps(r) + "\n" for r in lines)
    if torn:
        text += '{"step": 41, "epoch": 2, "lr": 1e-4, "loss/s'  # a process killed mid-write
    (run / "metrics.jsonl").write_text(text)


def by_gid(ax) -> dict:
    return {line.get_gid(): line for line in ax.get_lines() if line.get_gid()}


def axes_of(fig) -> dict:
    return {ax.get_gid(): ax for ax in fig.axes}


def trailing_mean(y: list[float], w: int) -> list[float]:
    return [sum(y[max(0, i - w + 1) : i + 1]) / len(y[max(0, i - w + 1) : i + 1]) for i in range(len(y))]


def test_smoothing_window_and_moving_average():
    assert [smoothing_window(n) for n in (1, 40, 100, 119, 120, 2000)] == [5, 5, 5, 5, 6, 100]
    assert moving_average([1.0, 2.0, 3.0, 4.0, 10.0], 2).tolist() == [1.0, 1.5, 2.5, 3.5, 7.0]
    assert moving_average([4.0], 5).tolist() == [4.0]
    with pytest.raises(ValueError, match="window 0"):
        moving_average([1.0], 0)


def test_curves_of_40_steps_and_3_evaluations(tmp_path):
    write_metrics(tmp_path, 40, DEV, torn=True)
    fig = plot_curves(tmp_path)
    assert (tmp_path / "curves.png").read_bytes()[:8] == PNG_MAGIC
    assert not list(tmp_path.glob("*.tmp")) and not list(tmp_path.glob(".curves*"))
    axes = axes_of(fig)
    assert set(axes) == {"loss", "dev-acc", "dev-r"}

    # loss: every step thin, plus the trailing mean of the last 5 steps (window max(5, 40 // 20))
    lines = by_gid(axes["loss"])
    steps = list(range(1, 41))
    for task, fn in (("sst", loss_sst), ("qqp", loss_qqp)):
        raw = [fn(i) for i in steps]
        assert lines[f"loss-raw/{task}"].get_xdata().tolist() == steps
        assert lines[f"loss-raw/{task}"].get_ydata().tolist() == pytest.approx(raw)
        avg = lines[f"loss-avg/{task}"]
        assert avg.get_xdata().tolist() == steps
        assert avg.get_ydata().tolist() == pytest.approx(trailing_mean(raw, 5))
        assert avg.get_label() == f"{task} (mean of last 5 steps)"
        assert lines[f"loss-raw/{task}"].get_linewidth() < avg.get_linewidth()

    # dev: x = optimizer step (two evaluations in epoch 1), accuracy and overall on 0..1
    acc = by_gid(axes["dev-acc"])
    assert set(acc) == {"dev/sst_acc", "dev/qqp_acc", "dev/overall"}  # no F1 / Spearman clutter
    for gid, col in (("dev/sst_acc", 2), ("dev/qqp_acc", 3), ("dev/overall", 5)):
        assert acc[gid].get_xdata().tolist() == [10, 20, 40]
        assert acc[gid].get_ydata().tolist() == pytest.approx([d[col] for d in DEV])
        assert acc[gid].get_marker() == "o"
    assert axes["dev-acc"].get_ylim() == (0.0, 1.0)
    # Pearson r on its own axis, -1..1 since one value is negative
    r = by_gid(axes["dev-r"])
    assert set(r) == {"dev/sts_pearson"}
    assert r["dev/sts_pearson"].get_ydata().tolist() == pytest.approx([-0.20, 0.40, 0.851])
    assert axes["dev-r"].get_ylim() == (-1.0, 1.0)
    # each series' last value is written beside it
    assert sorted(t.get_text() for t in axes["dev-acc"].texts) == ["0.412", "0.693", "0.743"]
    assert [t.get_text() for t in axes["dev-r"].texts] == ["0.851"]
    # one x range for all panels, from 0 past the last step; the end of epoch 1 (step 20) is marked
    for ax in axes.values():
        lo, hi = ax.get_xlim()
        assert lo == 0 and 40 < hi < 50
        assert [ln.get_xdata()[0] for ln in ax.get_lines() if list(ln.get_xdata()) == [20, 20]] == [20]


def test_a_few_steps_and_one_evaluation_still_show(tmp_path):
    write_metrics(tmp_path, 3, [(3, 1, 0.25, 0.625, 0.036, 0.5)])
    axes = axes_of(plot_curves(tmp_path))
    lines = by_gid(axes["loss"])
    assert lines["loss-raw/sst"].get_ydata().tolist() == pytest.approx([loss_sst(i) for i in (1, 2, 3)])
    assert "loss-avg/sst" not in lines  # 3 points: no average over 5 steps
    acc = by_gid(axes["dev-acc"])
    assert acc["dev/overall"].get_xdata().tolist() == [3]  # one labelled point at the run's last step
    assert sorted(t.get_text() for t in axes["dev-acc"].texts) == ["0.250", "0.500", "0.625"]
    assert axes["dev-r"].get_ylim() == (0.0, 1.0)  # no negative r
    assert [t.get_text() for t in axes["dev-r"].texts] == ["0.036"]
    assert all(ax.get_xlim()[0] == 0 and ax.get_xlim()[1] > 3 for ax in axes.values())


def test_empty_or_damaged_metrics_still_give_a_figure(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    lines = ["[1, 2]", '"text"', '{"no_step": 1}', '{"step": 2, "dev": {"overall": NaN}}', "{broken"]
    (run / "metrics.jsonl").write_text("\n".join(lines) + "\n")
    axes = axes_of(plot_curves(run))
    assert set(axes) == {"loss", "dev-acc"}  # no Pearson r: no correlation panel
    assert not by_gid(axes["loss"]) and not by_gid(axes["dev-acc"])  # nothing finite to draw
    assert "no training steps logged" in [t.get_text() for t in axes["loss"].texts]
    assert "no dev evaluation yet" in [t.get_text() for t in axes["dev-acc"].texts]
    assert (run / "curves.png").read_bytes()[:8] == PNG_MAGIC
    assert math.isfinite(axes["dev-acc"].get_xlim()[1])
    with pytest.raises(FileNotFoundError):
        plot_curves(tmp_path / "nowhere")
