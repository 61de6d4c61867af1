"""minbert: multi-task fine-tuning of BERT encoders (SST-5, QQP, STS-B).

Python API::

    import minbert
    run = minbert.train("configs/quick.yaml", data_dir="../shared/data/cs224n")
    print(run.summary["dev"])
    model = minbert.load(run.run_dir)  # or a `minbert export` folder
    model.sentiment(["a gorgeous film"])[0].name
"""

__version__ = "0.1.0"

import time as _time  # noqa: E402

STARTED_AT = _time.time()  # when the package was first imported: the CLI's "start of the command"

from .config import Config, load_config  # noqa: E402
from .errors import MinbertError  # noqa: E402
from .inference.predictor import Predictor, load  # noqa: E402
from .model.bert import BertConfig, BertModel  # noqa: E402
from .training.trainer import Run  # noqa: E402
from .training.trainer import train as _train  # noqa: E402

# the function shadows the submodule name on purpose: `minbert.train(config)` is the API,
# `from minbert.training.trainer import ...` still reaches the module through sys.modules
train = _train


__all__ = ["BertConfig", "BertModel", "Config", "MinbertError", "Predictor", "load", "load_config", "Run", "train", "__version__"]
