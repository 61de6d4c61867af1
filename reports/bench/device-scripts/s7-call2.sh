#!/bin/bash
# s7-call2 (1 GPU): the step after three changes: the pack's filler cut into pieces no
# longer than a row (FlashAttention's grid sized by max_seqlen = T instead of the bucket), host
# snapshots of checkpoints through pinned memory with one sync, one TensorBoard event per step.
# First what this machine's Python does at start-up (bytecode and matplotlib caches), then the
# CUDA tests, then both presets end to end (2 seeds each) and evaluation throughput with a profile;
# last, configs/default.yaml again with writable bytecode and matplotlib caches, filled once
# beforehand (what an installed environment has after its first run).
source reports/bench/device-scripts/s5-common.sh s7-call2
mkdir -p /tmp/site ../shared/data && cp -r .device/data ../shared/data/cs224n && cp -r .device/sst-trees ../shared/data/sst-trees
python3 -c "import zipfile,glob; [zipfile.ZipFile(w).extractall('/tmp/site') for w in glob.glob('.device/whl/*.whl')]"
export PYTHONPATH=$PWD/src:/tmp/site
{ python3 - <<'PY'
import os, sys, sysconfig, importlib.util, pathlib
print("dont_write_bytecode", sys.dont_write_bytecode, "PYTHONDONTWRITEBYTECODE", os.environ.get("PYTHONDONTWRITEBYTECODE"),
      "PYTHONPYCACHEPREFIX", sys.pycache_prefix)
sp = pathlib.Path(sysconfig.get_paths()["purelib"])
print("site-packages", sp, "writable", os.access(sp, os.W_OK))
for mod in ("torch", "scipy", "matplotlib"):
    d = pathlib.Path(importlib.util.find_spec(mod).origin).parent
    print(mod, "pyc files under it:", sum(1 for _ in d.rglob("*.pyc")), "py files:", sum(1 for _ in d.rglob("*.py")))
import matplotlib
print("matplotlib cachedir", matplotlib.get_cachedir(), os.listdir(matplotlib.get_cachedir()))
PY
  TIMEFORMAT="import minbert.training.trainer: %R s"; for i in 1 2; do time python3 -c "import minbert.training.trainer"; done
} > $R/env.txt 2>&1
timeout 200 python3 -m pytest -q -p no:cacheprovider tests/test_packing_cuda.py tests/test_cudagraph.py \
  tests/test_eval_graphs_cuda.py tests/test_optim.py tests/test_packed_training.py tests/test_resume.py \
  -k "not compiled" > $R/pytest.log 2>&1; mark pytest $?
e2e main default
[ $(left) -gt 200 ] && e2e main best --tasks.sst.phrases_file=$PWD/.device/sst-trees/train.txt
[ $(left) -gt 150 ] && timeout $(( $(left) - 100 )) python3 benchmarks/eval_throughput.py --data-dir $DATA --encoder $ENC \
  --config configs/default.yaml --profile --out $R/eval_throughput.json > $R/eval_throughput.log 2>&1; mark eval $?
export PYTHONPYCACHEPREFIX=/tmp/pyc MPLCONFIGDIR=/tmp/mpl SUFFIX=-warmenv
python3 -c "import minbert.training.trainer, minbert.training.plots, matplotlib.figure, matplotlib.font_manager"
[ $(left) -gt 95 ] && e2e main default
