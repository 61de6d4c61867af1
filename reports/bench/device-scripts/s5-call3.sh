#!/bin/bash
# s5-call3 (1 GPU): CUDA tests; configs/default.yaml and configs/best.yaml end to end as
# shipped (model.packing auto: on here), 2 seeds each, fresh inductor cache (cold); evaluation
# throughput against compiled transformers.
source reports/bench/device-scripts/s5-common.sh s5-call3
export TORCHINDUCTOR_CACHE_DIR=/tmp/inductor-cold
timeout 100 python3 -m pytest -q -p no:cacheprovider tests/test_packing_cuda.py tests/test_cudagraph.py tests/test_step.py \
  -k "not compiled" > $R/pytest.log 2>&1; mark pytest $?
e2e main default
[ $(left) -gt 70 ] && eval_tp
[ $(left) -gt 100 ] && e2e main best --tasks.sst.phrases_file=$PWD/.device/sst-trees/train.txt
