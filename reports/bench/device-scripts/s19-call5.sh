#!/bin/bash
# s19-call5 (1 GPU): the CUDA resume test (SIGKILL after a mid-epoch checkpoint of a packed run
# whose graphs hold the AdamW update, then --resume) and the benchmarks' Triton AdamW against
# torch's fused kernel, compiled.
export BUDGET=330
mkdir -p .device && tar xzf .device/sst-trees.tgz -C .device
source reports/bench/device-scripts/s5-common.sh s19-call5
rm -f $R/*
prime

timeout 280 python3 -m pytest -q -x -p no:cacheprovider tests/test_resume_cuda.py tests/test_bench_adamw.py \
  > $R/pytest.log 2>&1; mark pytest $?
tail -30 $R/pytest.log
