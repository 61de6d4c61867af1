"""benchmarks/master_weights_step.py's inductor settings per variant: each variant sets every knob
it names and puts the others back to inductor's defaults, the peer included, whatever ran before."""

import importlib.util
import sys
from pathlib import Path

import pytest
import torch
import torch._inductor.config as inductor_config

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import master_weights_step as mws  # noqa: E402

NAMES = [name for name, _ in mws.KNOBS.values()]


@pytest.fixture(autouse=True)
def restore_inductor_defaults():
    saved = {name: mws.get_setting(name) for name in NAMES}
    yield
    for name, value in saved.items():
        if value is not mws.MISSING:
            mws.set_setting(name, value)


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
    assert {name: mws.get_setting(name) for name in NAMES} != mws.DEFAULTS
    mws.set_knobs("peer")
    assert {name: mws.get_setting(name) for name in NAMES} == mws.DEFAULTS


def test_a_dotted_knob_reaches_inductors_sub_section():
    """pdl is inductor's triton.enable_pdl, a setting of a sub-section."""
    if mws.DEFAULTS["triton.enable_pdl"] is mws.MISSING:
        pytest.skip(f"torch {torch.__version__} has no triton.enable_pdl")
    mws.set_knobs("master-pdl-cdt")
    assert inductor_config.triton.enable_pdl is True and inductor_config.coordinate_descent_tuning is True
    mws.set_knobs("master-combo")
    assert inductor_config.triton.enable_pdl == mws.DEFAULTS["triton.enable_pdl"]
    assert inductor_config.coordinate_descent_tuning == mws.DEFAULTS["coordinate_descent_tuning"]


def test_a_setting_this_torch_lacks_is_missing_and_its_knob_raises(monkeypatch):
    assert mws.get_setting("no_such_setting") is mws.get_setting("no_section.enable_pdl") is mws.MISSING
    monkeypatch.setitem(mws.DEFAULTS, "triton.enable_pdl", mws.MISSING)
    with pytest.raises(ValueError, match=r"has no inductor setting \['triton.enable_pdl'\]"):
        mws.set_knobs("master-pdl")
    mws.set_knobs("master-cdt")  # the others still set and reset
    assert inductor_config.coordinate_descent_tuning is True


def test_an_unknown_knob_raises_and_changes_nothing():
    mws.set_knobs("master-combo")
    before = {name: mws.get_setting(name) for name in NAMES}
    with pytest.raises(ValueError, match="unknown inductor knob"):
        mws.set_knobs("master-combo-turbo")
    assert {name: mws.get_setting(name) for name in NAMES} == before


def test_the_one_kernel_attention_backward_is_patched_in_for_fbwd_variants_only():
    """fbwd bakes the fused backward into the next compile; every other variant, the peer and
    the shipped step included, gets our kernel's entry point back as it was."""
    import minbert.model.bert as bert

    original = mws._OUR_KERNEL
    try:
        mws.set_knobs("master-fbwd-wgs")
        assert bert._import_triton_kernel is mws._fused_backward_kernel
        for variant in ("whole", "peer", "master-wgs"):
            mws.set_knobs("master-fbwd")
            mws.set_knobs(variant)
            assert bert._import_triton_kernel is original, variant
        if importlib.util.find_spec("triton") is not None:  # the entry point, with the one-kernel backward
            kernel = mws._fused_backward_kernel("triton")
            assert kernel.func is original("triton") and kernel.keywords == {"fused_backward": True}
    finally:
        bert._import_triton_kernel = original


def _train_both_ways(graphed: bool):
    """A small encoder trained four steps with the dense master-weights AdamW and with the ``rows``
    knob's (the word embedding's update on the rows a step reads: attach_lazy_rows), its packed
    loss compiled with the word embedding's lookup as a break in the graph; on CUDA with
    ``graphed``, each step a replay of ``GraphedSteps`` captures with the update inside, as the
    benchmark runs it. Returns both (model, AdamW)."""
    import train_step as ts
    from minbert.model.bert import BertConfig, BertModel
    from minbert.training.cudagraph import GraphedSteps
    from minbert.training.lazy_rows import attach_lazy_rows
    from minbert.training.optim import AdamW, attach_master_weights

    dev = "cuda" if graphed else "cpu"
    cfg = BertConfig(vocab_size=64, hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32,
                     attn_implementation="eager", hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    g = torch.Generator().manual_seed(0)
    batches = []
    for _ in range(4):
        ids = torch.randint(1, 40, (3, 7), generator=g)
        mask = (torch.arange(7) < torch.tensor([[7], [4], [2]])).long()
        b = ts.packed_inputs({"input_ids": ids * mask, "attention_mask": mask, "token_type_ids": 0 * ids}, 64)
        batches.append({k: v.to(dev) for k, v in b.items() if k != "real_tokens"})
    models = []
    for rows in (False, True):
        torch.manual_seed(0)
        model = BertModel(cfg).to(dev).train()
        opt = AdamW(model.parameters(), lr=1e-2, weight_decay=0.01, fused=graphed, master_weights=True)
        if rows:
            attach_lazy_rows(model, opt)
        attach_master_weights(model, opt, dtype=torch.float32)  # fp32 working weights: no bf16 rounding of
        # gradients summed in another order (tests/test_lazy_rows.py covers 16-bit working weights)
        loss_fn = torch.compile(ts.packed_loss_fn(model, 3, 64, dev), dynamic=True)
        params = mws.graphed_params(model, opt.rows)  # the benchmark's: without the rows' table
        graphs = GraphedSteps(params, capture_after=0, direct=True, updater=opt) if graphed else None
        for b in batches:
            if graphs is not None:
                graphs.zero_grad()
                graphs.run("step", loss_fn, b, 1.0, [grp["lr"] for grp in opt.param_groups])
                assert graphs.step_updated
                opt.replayed()
            else:
                for p in model.parameters():
                    p.grad = None
                loss, _ = loss_fn(b)
                loss.backward()
                opt.step()
            if rows:
                assert model.embeddings.word_embeddings.weight.grad is None
        if rows:
            opt.rows.flush()
        models.append((model, opt))
    return models


@pytest.mark.parametrize("graphed", [False, pytest.param(True, marks=pytest.mark.skipif(
    not torch.cuda.is_available(), reason="needs CUDA"))])
def test_the_rows_variant_trains_as_the_dense_update_does(graphed):
    """After four steps and a flush, the table, the other weights and their state equal those of
    the dense master-weights AdamW (dropout off, so both see the same losses), and the table never
    got a dense gradient; eagerly, and on CUDA in captured steps. Rows never read moved too
    (weight decay), rows read earlier went on moving (their momentum)."""
    (dense, dense_opt), (lazy, lazy_opt) = _train_both_ways(graphed)
    word = dense.embeddings.word_embeddings.weight
    for (name, p), q in zip(dense.named_parameters(), lazy.parameters(), strict=True):
        # the table's gradient rows are sums over tokens in another order; where they nearly cancel,
        # Adam's g / (sqrt(v) + eps) magnifies the last bits (to about lr x 1e-3 here), and the
        # forward carries that into the other gradients (about 1e-6)
        tol = dict(rtol=1e-3, atol=1e-4) if p is word else dict(rtol=1e-3, atol=1e-5)
        torch.testing.assert_close(lazy_opt.state[q]["master"], dense_opt.state[p]["master"], **tol, msg=name)
        torch.testing.assert_close(lazy_opt.state[q]["exp_avg_sq"], dense_opt.state[p]["exp_avg_sq"], rtol=1e-4,
                                   atol=1e-10, msg=name)
    never_read = torch.ones(64, dtype=torch.bool, device=word.device)
    never_read[:40] = False
    assert (lazy_opt.state[lazy.embeddings.word_embeddings.weight]["exp_avg"][~never_read].abs().sum(1) > 0).any()
    assert not torch.equal(lazy.embeddings.word_embeddings.weight[never_read], word.new_zeros(24, 16))
