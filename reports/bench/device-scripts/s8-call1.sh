#!/bin/bash
# s8-call1 (1 GPU): graphed dev evaluation now runs a bf16-weight copy of the model
# (inference/graphs.py bf16_copy) instead of the fp32 model under autocast. The CUDA tests of the
# evaluation graphs; evaluation throughput with both minbert variants and the peer in one process,
# with a profile; then both presets end to end (2 seeds each). Python's bytecode and matplotlib's
# font cache are written to /tmp and filled once first (what an installed environment has after
# its first import: this machine's image sets PYTHONDONTWRITEBYTECODE=1 and ships torch without
# .pyc files, see s7-call2-env.txt).
source reports/bench/device-scripts/s5-common.sh s8-call1
prime
timeout 150 python3 -m pytest -q -p no:cacheprovider tests/test_eval_graphs_cuda.py tests/test_eval_bf16.py > $R/pytest.log 2>&1; mark pytest $?
timeout $(( $(left) - 300 )) python3 benchmarks/eval_throughput.py --data-dir $DATA --encoder $ENC \
  --config configs/default.yaml --also-autocast --profile --out $R/eval_throughput.json > $R/eval_throughput.log 2>&1; mark eval $?
e2e main default
[ $(left) -gt 150 ] && e2e main best --tasks.sst.phrases_file=$PWD/.device/sst-trees/train.txt
