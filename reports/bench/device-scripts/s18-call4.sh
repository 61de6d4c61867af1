#!/bin/bash
# s18-call4 (1 GPU): s18-call3 again, with Lion's test left out (the machine has no lion-pytorch):
# the CUDA tests of the graphs (the update in the graph with and without clipping; a packed run
# with the update in the graph against one updating from the host), the step, the optimizers and
# the packed paths.
export BUDGET=300
source reports/bench/device-scripts/s5-common.sh s18-call4
rm -f $R/*
timeout 280 python3 -m pytest -q -x -rs tests/test_cudagraph.py tests/test_step.py tests/test_optim.py tests/test_packing_cuda.py \
  -k "not lion" > $R/pytest.log 2>&1; mark pytest $?
tail -15 $R/pytest.log
