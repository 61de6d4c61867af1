#!/bin/bash
# session 7, call 3 (1 GPU): both presets end to end again, the same code as s7-call2, but with a
# bytecode cache. This machine's image sets PYTHONDONTWRITEBYTECODE=1 and ships torch without .pyc
# files, so every process compiles torch's Python sources on import (s7-call2-env.txt: 5.8-7.4 s
# to import the trainer). A pip-installed environment has those .pyc files. Here they go to
# /tmp/pyc (PYTHONPYCACHEPREFIX), filled once by importing the modules a run uses; matplotlib's
# font cache is filled by the same import. Inductor is not used by the presets (nothing to warm).
source reports/bench/device-scripts/s5-common.sh s7-call3
mkdir -p ../shared/data && cp -r .device/data ../shared/data/cs224n && cp -r .device/sst-trees ../shared/data/sst-trees
unset PYTHONDONTWRITEBYTECODE
export PYTHONPYCACHEPREFIX=/tmp/pyc MPLCONFIGDIR=/tmp/mpl
TIMEFORMAT="%R s"
{ echo "first import (fills the caches):"; time python3 -c "import minbert.training.trainer, minbert.training.plots, \
minbert.training.task_plots, minbert.inference.model_card, minbert.cli, matplotlib.figure, matplotlib.font_manager, \
torch.utils.tensorboard, scipy.stats"; echo "second import of the trainer:"; time python3 -c "import minbert.training.trainer"; } > $R/env.txt 2>&1
e2e main default
[ $(left) -gt 150 ] && e2e main best --tasks.sst.phrases_file=$PWD/.device/sst-trees/train.txt
