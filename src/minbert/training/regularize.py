"""Consistency regularisers added to a task's loss in the training step.

* **SMART** (Jiang et al. 2020, "SMART: Robust and Efficient Fine-Tuning for Pre-trained Natural
  Language Models through Principled Regularized Optimization", Eq. 2-3 and Algorithm 1):
  smoothness-inducing adversarial regularisation. The word embeddings are perturbed by
  Gaussian noise of std ``sigma``; one step of projected gradient ascent (step ``eta``, the
  l-infinity normalised gradient, projected onto the ``eps`` ball) makes the perturbation
  adversarial; the regulariser is the symmetric divergence between the model's output on the
  clean and on the perturbed input, ``lambda_s * D_s(f(x), f(x + delta))``. As in the paper's
  implementation, dropout is off inside the adversarial term (the module is put in eval mode
  for those forward passes), and the perturbed outputs are compared with the clean ones.
* **R-Drop** (Liang et al. 2021, "R-Drop: Regularized Dropout for Neural Networks", Eq. 3):
  a second forward pass with another dropout mask; the loss is the mean of both passes' task
  losses plus ``alpha * D_s(f_1(x), f_2(x))``.

``D_s`` is the symmetric KL divergence for classification (softmax over classes; Bernoulli of
the sigmoid for a binary logit) and the squared error for regression.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

import torch
import torch.nn.functional as F
from torch import nn


def symmetric_divergence(kind: str, p: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """Mean over the batch of a symmetric divergence between two outputs of one batch.

    kind ``classification``: p, q (B, C) logits, KL(P||Q) + KL(Q||P) of the softmaxes;
    ``binary``: p, q (B,) logits, the same for Bernoulli(sigmoid); ``regression``: p, q (B,)
    scores, (p - q)^2. Returns a float32 scalar.

    Raises:
        ValueError: an unknown kind.
    """
    p, q = p.float(), q.float()
    if kind == "binary":
        p, q = torch.stack([torch.zeros_like(p), p], -1), torch.stack([torch.zeros_like(q), q], -1)
        kind = "classification"
    if kind == "classification":
        lp, lq = F.log_softmax(p, -1), F.log_softmax(q, -1)
        return ((lp.exp() - lq.exp()) * (lp - lq)).sum(-1).mean()  # KL(P||Q) + KL(Q||P)
    if kind == "regression":
        return (p - q).pow(2).mean()
    raise ValueError(f"unknown task kind {kind!r}")


class _EmbeddingNoise:
    """A forward hook on the word-embedding module that adds ``delta`` to its output."""

    def __init__(self, module: nn.Module):
        self.module, self.delta, self.handle = module, None, None

    @contextlib.contextmanager
    def adding(self, delta_fn: Callable[[torch.Tensor], torch.Tensor]) -> Iterator[_EmbeddingNoise]:
        """While active, the word embeddings e become e + delta_fn(e)."""

        def hook(_mod: nn.Module, _inp: tuple, out: torch.Tensor) -> torch.Tensor:
            self.delta = delta_fn(out)
            return out + self.delta

        self.handle = self.module.register_forward_hook(hook)
        try:
            yield self
        finally:
            self.handle.remove()


@contextlib.contextmanager
def _eval_mode(module: nn.Module):
    was = module.training
    module.train(False)
    try:
        yield
    finally:
        module.train(was)


def smart_loss(
    model: nn.Module,
    task: str,
    kind: str,
    batch: dict,
    clean: torch.Tensor,
    sigma: float = 1e-5,
    eta: float = 1e-3,
    eps: float = 1e-5,
) -> torch.Tensor:
    """SMART's regulariser for one batch (see the module docstring), without the lambda_s factor.

    Args:
        model: a :class:`minbert.model.heads.MultitaskModel` (its ``encoder.embeddings.word_embeddings``
            is perturbed).
        task, kind: the task's name and kind (``classification``, ``binary``, ``regression``).
        batch: the task's batch on the model's device.
        clean: the model's output on ``batch`` (with its autograd graph).
        sigma: std of the initial Gaussian noise; eta: ascent step size; eps: l-inf radius.

    Returns: a float32 scalar with gradients into the model's parameters.
    """
    noise = _EmbeddingNoise(model.encoder.embeddings.word_embeddings)
    target = clean.detach()
    with _eval_mode(model):
        with noise.adding(lambda e: (torch.randn_like(e) * sigma).requires_grad_()):
            adv = symmetric_divergence(kind, model(task, batch), target)
        (grad,) = torch.autograd.grad(adv, noise.delta)
        delta = noise.delta.detach() + eta * grad / grad.abs().amax(dim=(-2, -1), keepdim=True).clamp_min(1e-12)
        delta = delta.clamp(-eps, eps)
        with noise.adding(lambda e: delta.to(e.dtype)):
            perturbed = model(task, batch)
    return symmetric_divergence(kind, perturbed, clean)
