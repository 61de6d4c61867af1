#!/bin/bash
# s17-call2 (1 GPU): configs/default.yaml end to end, this tree against .device/before (git
# b5195b5: two kernel compile children, the plots drawn one after the other at the end, each
# graph input copied by itself), benchmarks/e2e.py, 2 seeds each, an empty Triton cache per run.
# This tree: three compile children, curves.png begun before the final predictions and the plots
# drawn side by side by forked workers, a graph's inputs in one transfer (StaticInputs). Then
# this tree's phases (run_phases.py; fills the default Triton cache) and end to end with that
# cache (warm, both seeds); last the CUDA tests of the graphs and the plot child.
source reports/bench/device-scripts/s5-common.sh s17-call2
rm -f $R/*
prime
python3 -c "import torch._dynamo"  # its bytecode, as an installed torch has it (the optimizer imports it)
ab after src default
ab before .device/before/src default
SUMS="--sum minbert.training.cudagraph:GraphedSteps._capture --sum minbert.training.cudagraph:GraphedSteps._eager
 --sum minbert.inference.graphs:GraphedForward._capture"
timeout 120 python3 benchmarks/run_phases.py --out $R/phases-after.json $SUMS -- train --config configs/default.yaml \
  --run-dir /tmp/ph-after --overwrite --no-progress --data-dir $DATA --model.encoder=$ENC > /dev/null 2> $R/phases-after.log
mark phases-after $?
cp /tmp/ph-after/summary.json $R/phases-after-summary.json 2>/dev/null
[ $(left) -gt 100 ] && SUFFIX=-warm e2e after default
[ $(left) -gt 60 ] && { timeout $(( $(left) - 5 )) python3 -m pytest -q -x tests/test_cudagraph.py \
  tests/test_eval_graphs_cuda.py tests/test_task_plots.py > $R/pytest.log 2>&1; mark pytest $?; }
python3 -c "
import json; d=json.load(open('$R/phases-after.json')); print('phases', d['main_returned_s'], d['children'])
print(' '.join(f\"{p['name']}={p['end_s']-p['start_s']:.2f}@{p['start_s']:.2f}\" for p in d['phases']))
print(d['sums'])"
