#!/bin/bash
# s20-call4 (1 GPU): bert-base's packed step at batch 32 (benchmarks/master_weights_step.py) in
# one process: the peer, the master-weights step, and the master-weights step with inductor's
# coordinate-descent tuning of its Triton kernels.
export BUDGET=540
mkdir -p .device && tar xzf .device/sst-trees.tgz -C .device
source reports/bench/device-scripts/s5-common.sh s20-call4
rm -f $R/*
timeout $(( $(left) - 10 )) python3 benchmarks/master_weights_step.py --data-dir $DATA --encoder $ENC --batch 32 \
  --variants peer,master,master-cdt --out $R/master-cdt-b32.json > /dev/null 2> $R/master-cdt-b32.log
mark master-cdt-b32 $?
grep -h '^{' $R/master-cdt-b32.log | cut -c1-220
grep -h "Error" $R/master-cdt-b32.log | tail -3
