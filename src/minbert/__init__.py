"""minbert: multi-task fine-tuning of BERT encoders (SST-5, QQP, STS-B).

Python API::

    import minbert
    run = minbert.train("configs/quick.yaml", data_dir="../shared/data/cs224n")
    print(run.summary["dev"])
    model = minbert.load(run.run_dir)  # or a `minbert export` folder
    model.sentiment(["a gorgeous film"])[0].name

The names below are imported on first use (PEP 562), so ``import minbert`` and ``minbert --help``
stay fast and never import torch; ``minbert.load`` reaches only the inference path.
"""

from __future__ import annotations

import time as _time
from importlib import import_module
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

STARTED_AT = _time.time()  # when the package was first imported: the CLI's "start of the command"

# public name -> (module, attribute)
_LAZY = {
    "Config": ("minbert.config", "Config"),
    "load_config": ("minbert.config", "load_config"),
    "MinbertError": ("minbert.errors", "MinbertError"),
    "BertConfig": ("minbert.model.bert", "BertConfig"),
    "BertModel": ("minbert.model.bert", "BertModel"),
    "Predictor": ("minbert.inference.predictor", "Predictor"),
    "load": ("minbert.inference.predictor", "load"),
    "Run": ("minbert.runs", "Run"),
    "train": ("minbert.training.trainer", "train"),
}

if TYPE_CHECKING:
    from .config import Config, load_config
    from .errors import MinbertError
    from .inference.predictor import Predictor, load
    from .model.bert import BertConfig, BertModel
    from .runs import Run
    from .training.trainer import train


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        module, attr = _LAZY[name]
        value = getattr(import_module(module), attr)
        globals()[name] = value  # later lookups skip this function
        return value
    raise AttributeError(f"module 'minbert' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_LAZY])


__all__ = ["BertConfig", "BertModel", "Config", "MinbertError", "Predictor", "load", "load_config", "Run", "train",
           "__version__"]
