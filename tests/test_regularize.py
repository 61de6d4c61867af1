"""SMART, R-Drop and uncertainty weighting: divergences against hand computations, the
adversarial step's effect, and whole-step wiring."""

from __future__ import annotations

import math

import pytest
import torch

from minbert.config import load_config
from minbert.model.multitask import build_model
from minbert.tasks.base import get_task
from minbert.training.regularize import smart_loss, symmetric_divergence
from minbert.training.step import TrainStep


def test_symmetric_divergence_by_hand():
    p, q = torch.tensor([[1.0, 0.0, -1.0]]), torch.tensor([[0.0, 0.5, 0.0]])
    P, Q = torch.softmax(p, -1), torch.softmax(q, -1)
    want = float((P * (P / Q).log()).sum() + (Q * (Q / P).log()).sum())
    assert float(symmetric_divergence("classification", p, q)) == pytest.approx(want, rel=1e-6)
    # binary: the Bernoulli of the sigmoid
    a, b = 0.3, -1.2
    pa, pb = 1 / (1 + math.exp(-a)), 1 / (1 + math.exp(-b))
    kl = lambda x, y: x * math.log(x / y) + (1 - x) * math.log((1 - x) / (1 - y))  # noqa: E731
    got = float(symmetric_divergence("binary", torch.tensor([a]), torch.tensor([b])))
    assert got == pytest.approx(kl(pa, pb) + kl(pb, pa), rel=1e-6)
    assert float(symmetric_divergence("regression", torch.tensor([1.0, 3.0]), torch.tensor([2.0, 3.0]))) == 0.5
    assert float(symmetric_divergence("classification", p, p)) == 0.0
    with pytest.raises(ValueError):
        symmetric_divergence("ranking", p, q)


def _model(tiny_encoder, *overrides):
    cfg = load_config(None, [
        "model.hidden_dropout_prob=0.0", "model.attention_probs_dropout_prob=0.0",
        "tasks.sst.dropout=0.0", "tasks.qqp.dropout=0.0", "tasks.sts.dropout=0.0", *overrides,
    ])
    torch.manual_seed(0)
    return cfg, build_model(cfg, tiny_encoder)


def _sst_batch():
    torch.manual_seed(1)
    ids = torch.randint(1000, 5000, (4, 9))
    ids[:, 0] = 101
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids), "token_type_ids": torch.zeros_like(ids),
            "labels": torch.tensor([0, 1, 2, 4])}


def test_smart_is_zero_without_noise_and_grows_with_the_radius(tiny_encoder):
    _, model = _model(tiny_encoder)
    model.train()
    batch = _sst_batch()
    clean = model("sst", batch)
    zero = smart_loss(model, "sst", "classification", batch, clean, sigma=0.0, eta=0.0, eps=0.0)
    assert float(zero.detach()) == pytest.approx(0.0, abs=1e-10)
    small = smart_loss(model, "sst", "classification", batch, clean, sigma=1e-5, eta=1e-3, eps=1e-3)
    large = smart_loss(model, "sst", "classification", batch, clean, sigma=1e-5, eta=1e-1, eps=1e-1)
    assert 0.0 < float(small.detach()) < float(large.detach())
    large.backward()  # the regulariser trains the encoder
    assert model.encoder.embeddings.word_embeddings.weight.grad.abs().sum() > 0
    assert model.training  # eval mode only inside the adversarial passes
    assert not model.encoder.embeddings.word_embeddings._forward_hooks  # the noise hook is removed


def test_train_step_adds_rdrop_smart_and_uncertainty(tiny_encoder):
    batch = _sst_batch()
    tasks = {"sst": get_task("sst")}
    cfg, model = _model(tiny_encoder)
    base = TrainStep(model, tasks, {"sst": 2.0}, torch.device("cpu"), False, cfg.train)(
        {"sst": batch}
    )
    plain = 2.0 * torch.nn.functional.cross_entropy(model("sst", batch), batch["labels"])
    assert float(base.total) == pytest.approx(float(plain), rel=1e-6)
    # R-Drop without dropout: both passes agree, so the loss is the plain one
    cfg_r, model_r = _model(tiny_encoder, "train.rdrop_alpha=1.0")
    rd = TrainStep(model_r, tasks, {"sst": 2.0}, torch.device("cpu"), False, cfg_r.train)({"sst": batch})
    assert float(rd.total) == pytest.approx(float(plain), rel=1e-5)
    cfg_s, model_s = _model(tiny_encoder, "train.smart_weight=10.0", "train.smart_eps=0.1", "train.smart_eta=0.1")
    sm = TrainStep(model_s, tasks, {"sst": 2.0}, torch.device("cpu"), False, cfg_s.train)({"sst": batch})
    assert float(sm.total) > float(plain)
    # uncertainty weighting: exp(-s) w L + s with s = 0.5
    cfg_u, model_u = _model(tiny_encoder, "train.loss_weighting=uncertainty")
    with torch.no_grad():
        model_u.loss_log_vars["sst"].fill_(0.5)
    un = TrainStep(model_u, tasks, {"sst": 2.0}, torch.device("cpu"), False, cfg_u.train)({"sst": batch})
    assert float(un.total) == pytest.approx(math.exp(-0.5) * float(plain) + 0.5, rel=1e-5)
    assert float(un.per_task[0]) == pytest.approx(float(plain), rel=1e-5)  # logged: w L
    un.total.backward()
    assert model_u.loss_log_vars["sst"].grad is not None
