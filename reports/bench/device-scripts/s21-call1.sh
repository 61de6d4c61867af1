#!/bin/bash
# s21-call1 (1 GPU): bert-base's packed step at batch 32 (benchmarks/master_weights_step.py) in
# one process: the peer (first, under inductor's defaults), the master-weights step, and the
# master-weights step under inductor settings that cut kernels: reductions not split, combo
# kernels, aggressive fusion, and combo kernels with reductions not split.
export BUDGET=570
mkdir -p .device && tar xzf .device/sst-trees.tgz -C .device
source reports/bench/device-scripts/s5-common.sh s21-call1
rm -f $R/*
nvidia-smi --query-gpu=name,clocks.max.sm,clocks.sm,power.limit --format=csv > $R/gpu.txt 2>&1
timeout $(( $(left) - 10 )) python3 benchmarks/master_weights_step.py --data-dir $DATA --encoder $ENC --batch 32 \
  --variants peer,master,master-nosplit,master-combo,master-agg,master-combo-nosplit \
  --out $R/knobs-b32.json > /dev/null 2> $R/knobs-b32.log
mark knobs-b32 $?
grep -h '^{' $R/knobs-b32.log | cut -c1-260
grep -h "Error" $R/knobs-b32.log | tail -3
