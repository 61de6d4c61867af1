#!/bin/bash
# s18-call5 (1 GPU): the packed paths' CUDA tests (the kernel-compile test now expecting one
# child per kernel, three; s18-call4 stopped there), graphed evaluation and the varlen kernel.
export BUDGET=300
source reports/bench/device-scripts/s5-common.sh s18-call5
rm -f $R/*
timeout 280 python3 -m pytest -q -rs tests/test_packing_cuda.py tests/test_eval_graphs_cuda.py tests/test_varlen_triton.py \
  > $R/pytest.log 2>&1; mark pytest $?
tail -15 $R/pytest.log
