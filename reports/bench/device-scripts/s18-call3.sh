#!/bin/bash
# s18-call3 (1 GPU): the CUDA tests of the graphs (the update in the graph with and without
# clipping; a packed run with the update in the graph against one updating from the host), the
# step, and the packed paths, after AdamW.load_state_dict came to copy into the state it holds.
export BUDGET=300
source reports/bench/device-scripts/s5-common.sh s18-call3
rm -f $R/*
timeout 280 python3 -m pytest -q -x -rs tests/test_cudagraph.py tests/test_step.py tests/test_optim.py tests/test_packing_cuda.py \
  > $R/pytest.log 2>&1; mark pytest $?
tail -15 $R/pytest.log
