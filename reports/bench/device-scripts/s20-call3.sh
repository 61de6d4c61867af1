#!/bin/bash
# s20-call3 (1 GPU): the test files that run CUDA code (CUDA graphs, packing, the step, the fused
# linear nodes, the Triton varlen kernel, evaluation graphs, resume, master weights and the
# benchmarks' Triton AdamW) on the GPU, after the master-weights changes.
export BUDGET=480
mkdir -p .device && tar xzf .device/sst-trees.tgz -C .device
source reports/bench/device-scripts/s5-common.sh s20-call3
rm -f $R/*
prime
timeout 420 python3 -m pytest -q -p no:cacheprovider tests/test_cudagraph.py tests/test_eval_graphs_cuda.py \
  tests/test_packing_cuda.py tests/test_packing.py tests/test_step.py tests/test_train_ops.py \
  tests/test_varlen_triton.py tests/test_resume_cuda.py tests/test_master_weights.py tests/test_bench_adamw.py \
  > $R/pytest.log 2>&1; mark pytest $?
grep -E "passed|failed|FAILED|ERROR" $R/pytest.log | tail -15
