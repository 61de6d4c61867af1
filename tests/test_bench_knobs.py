"""benchmarks/master_weights_step.py's inductor settings per variant: each variant sets every knob
it names and puts the others back to inductor's defaults, the peer included, whatever ran before."""

import sys
from pathlib import Path

import pytest
import torch._inductor.config as inductor_config

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import master_weights_step as mws  # noqa: E402

NAMES = [name for name, _ in mws.KNOBS.values()]


@pytest.fixture(autouse=True)
def restore_inductor_defaults():
    saved = {name: getattr(inductor_config, name) for name in NAMES}
    yield
    for name, value in saved.items():
        setattr(inductor_config, name, value)


def test_a_variant_sets_the_knobs_it_names_and_resets_the_others():
    mws.set_knobs("master-combo-nosplit")
    assert inductor_config.combo_kernels is True and inductor_config.split_reductions is False
    assert inductor_config.aggressive_fusion == mws.DEFAULTS["aggressive_fusion"]
    mws.set_knobs("whole-agg-cdt")
    assert inductor_config.aggressive_fusion is True and inductor_config.coordinate_descent_tuning is True
    assert inductor_config.combo_kernels == mws.DEFAULTS["combo_kernels"]
    assert inductor_config.split_reductions == mws.DEFAULTS["split_reductions"]


def test_the_peer_runs_under_inductors_defaults_after_any_variant():
    mws.set_knobs("master-combo-nosplit-agg-cdt")
    assert {name: getattr(inductor_config, name) for name in NAMES} != mws.DEFAULTS
    mws.set_knobs("peer")
    assert {name: getattr(inductor_config, name) for name in NAMES} == mws.DEFAULTS


def test_an_unknown_knob_raises_and_changes_nothing():
    mws.set_knobs("master-combo")
    before = {name: getattr(inductor_config, name) for name in NAMES}
    with pytest.raises(ValueError, match="unknown inductor knob"):
        mws.set_knobs("master-combo-turbo")
    assert {name: getattr(inductor_config, name) for name in NAMES} == before
