#!/bin/bash
# s22-call2 (1 GPU): the test files that run CUDA code (as s20-call3) with the bias gradients'
# ones kept in blocks (model/train_ops.py, bias_ones); then bert-base's packed step at batch 32
# in one process: the peer first, the master-weights step with combo kernels and unsplit
# reductions.
export BUDGET=575
mkdir -p .device && tar xzf .device/sst-trees.tgz -C .device
source reports/bench/device-scripts/s5-common.sh s22-call2
rm -f $R/*
prime
nvidia-smi --query-gpu=name,clocks.max.sm,clocks.sm,power.limit --format=csv > $R/gpu.txt 2>&1
timeout 330 python3 -m pytest -q -p no:cacheprovider tests/test_train_ops.py tests/test_cudagraph.py \
  tests/test_eval_graphs_cuda.py tests/test_packing_cuda.py tests/test_packing.py tests/test_step.py \
  tests/test_varlen_triton.py tests/test_resume_cuda.py tests/test_master_weights.py tests/test_bench_adamw.py \
  > $R/pytest.log 2>&1; mark pytest $?
grep -E "passed|failed|FAILED|ERROR" $R/pytest.log | tail -15
timeout $(( $(left) - 5 )) python3 benchmarks/master_weights_step.py --data-dir $DATA --encoder $ENC --batch 32 \
  --variants peer,master-combo-nosplit --out $R/knobs-b32.json > /dev/null 2> $R/knobs-b32.log
mark knobs-b32 $?
grep -h '^{' $R/knobs-b32.log | cut -c1-260
grep -h "Error" $R/knobs-b32.log | tail -3
