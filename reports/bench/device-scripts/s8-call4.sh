#!/bin/bash
# s8-call4 (1 GPU): after the review of the bf16 evaluation copy (made outside inference mode,
# matched to the model by name, a fallback for heads sharing an encoder parameter): the CUDA tests of
# the evaluation graphs, then configs/default.yaml end to end (2 seeds) as shipped.
source reports/bench/device-scripts/s5-common.sh s8-call4
rm -f $R/*
mkdir -p ../shared/data && cp -r .device/data ../shared/data/cs224n 2>/dev/null
unset PYTHONDONTWRITEBYTECODE
export PYTHONPYCACHEPREFIX=/tmp/pyc MPLCONFIGDIR=/tmp/mpl
timeout 60 python3 -m pytest -q -p no:cacheprovider tests/test_eval_graphs_cuda.py tests/test_eval_bf16.py \
  > $R/pytest.log 2>&1; mark pytest $?
[ $(left) -gt 100 ] && e2e main default
