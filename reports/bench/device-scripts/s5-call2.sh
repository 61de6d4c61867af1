#!/bin/bash
# s5-call2 (1 GPU): CUDA tests (one graph per packed step); configs/default.yaml and
# configs/best.yaml end to end with model.packing=on, 2 seeds each (host copies via pinned
# memory, evaluation plans made on the host); evaluation throughput against compiled transformers.
# (best.yaml stopped at once here: its phrases file was not on the GPU machine; call 3 ran it.)
source reports/bench/device-scripts/s5-common.sh s5-call2
timeout 120 python3 -m pytest -q -p no:cacheprovider tests/test_packing_cuda.py tests/test_cudagraph.py \
  -k "not compiled" > $R/pytest.log 2>&1; mark pytest $?
SUFFIX=-packed
e2e packed default --model.packing=on
[ $(left) -gt 70 ] && eval_tp
[ $(left) -gt 100 ] && e2e packed best --model.packing=on
