#!/bin/bash
# session 6, call 2 (1 GPU): CUDA tests of the new paths (graphed dev evaluation, direct gradients,
# fused AdamW); configs/default.yaml and configs/best.yaml end to end as shipped, 2 seeds each
# (the presets do not compile: cold = warm); evaluation throughput against compiled transformers;
# the trainer's own step profiled on configs/default.yaml if time is left.
source reports/bench/device-scripts/s5-common.sh s6-call2
export TORCHINDUCTOR_CACHE_DIR=/tmp/inductor-cold
timeout 150 python3 -m pytest -q -p no:cacheprovider tests/test_eval_graphs_cuda.py tests/test_cudagraph.py \
  tests/test_packing_cuda.py tests/test_optim.py -k "not compiled" > $R/pytest.log 2>&1; mark pytest $?
e2e main default
[ $(left) -gt 150 ] && e2e main best --tasks.sst.phrases_file=$PWD/.device/sst-trees/train.txt
[ $(left) -gt 70 ] && eval_tp
[ $(left) -gt 100 ] && { timeout $(( $(left) - 5 )) python3 benchmarks/profile_train.py --config configs/default.yaml \
  --data-dir $DATA --variant shipped= --variant unfused=optim.fused=off --out $R/profile-train-default.json -- --model.encoder=$ENC \
  > $R/profile-train-default.log 2>&1; mark profile-train $?; }
