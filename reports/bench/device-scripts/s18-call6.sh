#!/bin/bash
# s18-call6 (1 GPU): after the review (one fused group update shared by AdamW.step and
# graph_update; GraphedSteps.step_updated from its updater): the CUDA tests of the graphs, the
# step and the optimizers (Lion's left out: the machine has no lion-pytorch).
export BUDGET=240
source reports/bench/device-scripts/s5-common.sh s18-call6
rm -f $R/*
timeout 220 python3 -m pytest -q -rs tests/test_cudagraph.py tests/test_step.py tests/test_optim.py -k "not lion" \
  > $R/pytest.log 2>&1; mark pytest $?
tail -5 $R/pytest.log
