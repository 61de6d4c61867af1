"""Surgical fine-tuning and initialisation from another run.

* :func:`freeze_layers` -- surgical fine-tuning (Lee et al. 2023, "Surgical Fine-Tuning Improves
  Adaptation to Distribution Shifts", ICLR 2023): train only part of the network. Option
  ``train.freeze_layers`` = k: ``0`` trains everything (the default), ``k >= 1`` freezes the
  embeddings and the first k encoder layers (layers 0..k-1, counted from the input), ``-1``
  freezes the embeddings only. The pooler and the task heads always train. With the
  ``frozen`` mode the whole encoder is frozen anyway.
* :func:`init_from_run` -- option ``train.init_from``: start from a previous run's best weights
  (e.g. the reference paper's exp 14 continues exp 7's model with surgical fine-tuning). Every
  key and shape is checked (:func:`minbert.training.checkpoint.check_file_weights`), so the heads must be
  the same as that run's.
"""

from __future__ import annotations

import logging
from pathlib import Path

from torch import nn

from ..errors import ConfigError
from ..runs import best_or_last_weights, check_file_weights, require_run_dir

log = logging.getLogger(__name__)


def frozen_prefixes(num_layers: int, k: int) -> tuple[str, ...]:
    """Parameter-name prefixes (relative to the encoder) that ``freeze_layers = k`` freezes.

    Raises:
        ConfigError: k < -1 or k > num_layers.
    """
    # k > num_layers needs the encoder's size, so it is checked here; a config's k >= -1 is
    # checked when it is loaded (minbert.config.validate_training), this guards direct use
    if k < -1 or k > num_layers:
        raise ConfigError(
            f"train.freeze_layers {k}: must be -1 (embeddings only), 0 (nothing) or 1..{num_layers} "
            f"(embeddings + the first k of the encoder's {num_layers} layers)"
        )
    if k == 0:
        return ()
    return ("embeddings.",) + tuple(f"encoder.layer.{i}." for i in range(max(k, 0)))


def freeze_layers(model: nn.Module, k: int) -> list[str]:
    """Set ``requires_grad = False`` on the encoder's embeddings and first k layers (k = -1:
    embeddings only; 0: nothing). ``model`` is a :class:`minbert.model.heads.MultitaskModel` (or
    anything with a BERT ``encoder`` attribute). Returns the frozen parameter names (as in
    ``model.named_parameters()``). Call it before building the optimizer."""
    encoder = model.encoder
    prefixes = frozen_prefixes(encoder.config.num_hidden_layers, k)
    frozen = []
    for name, p in encoder.named_parameters():
        if prefixes and name.startswith(prefixes):
            p.requires_grad_(False)
            frozen.append(f"encoder.{name}")
    if prefixes:
        n = sum(model.get_parameter(f).numel() for f in frozen)
        total = sum(p.numel() for p in model.parameters())
        what = "embeddings" + (f" + encoder layers 0..{k - 1}" if k > 0 else "")
        log.info("surgical fine-tuning: froze %s (%d of %d parameters)", what, n, total)
    return frozen


def init_from_run(model: nn.Module, run_dir: str | Path) -> Path:
    """Load a run's best weights (else its last checkpoint's) into ``model``, checking every key
    and shape. Returns the weights file.

    Raises:
        CheckpointError: not a run folder, no checkpoint, or keys/shapes that differ (e.g. other heads).
    """
    path = best_or_last_weights(require_run_dir(run_dir))
    meta = check_file_weights(model, path)
    log.info("initialised the model from %s (%s)", path, {k: meta[k] for k in ("epoch", "step") if k in meta})
    return path
