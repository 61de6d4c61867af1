#!/bin/bash
# s8-call4 (1 GPU): the CUDA tests of the training and evaluation paths after the evaluation moved to
# a bf16-weight copy (the trainer's dev evaluation, resume, packed training, graphs, steps).
source reports/bench/device-scripts/s5-common.sh s8-call4
rm -f $R/*
mkdir -p /tmp/site ../shared/data && cp -r .device/data ../shared/data/cs224n 2>/dev/null; cp -r .device/sst-trees ../shared/data/sst-trees 2>/dev/null
python3 -c "import zipfile,glob; [zipfile.ZipFile(w).extractall('/tmp/site') for w in glob.glob('.device/whl/*.whl')]"
export PYTHONPATH=$PWD/src:/tmp/site
unset PYTHONDONTWRITEBYTECODE
export PYTHONPYCACHEPREFIX=/tmp/pyc
timeout $(( $(left) - 5 )) python3 -m pytest -q -p no:cacheprovider tests/test_packing_cuda.py tests/test_cudagraph.py \
  tests/test_eval_graphs_cuda.py tests/test_eval_bf16.py tests/test_optim.py tests/test_packed_training.py \
  tests/test_resume.py tests/test_step.py -k "not compiled" > $R/pytest.log 2>&1; mark pytest $?
tail -3 $R/pytest.log
