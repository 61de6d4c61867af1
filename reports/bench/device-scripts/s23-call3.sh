#!/bin/bash
# s23-call3 (1 GPU): bert-base's packed step at batch 128 in one process
# (benchmarks/master_weights_step.py): the peer first, the master-weights step under inductor's
# defaults, then with combo kernels and unsplit reductions (the settings that helped at batch 32
# and cost the shipped step 6.8% at batch 128).
export BUDGET=560
mkdir -p .device/sst-trees
tar xzf .device/data.tgz -C .device  # (carried packed)
source reports/bench/device-scripts/s5-common.sh s23-call3
rm -f $R/*
nvidia-smi --query-gpu=name,clocks.max.sm,clocks.sm,power.limit --format=csv > $R/gpu.txt 2>&1
timeout $(( $(left) - 5 )) python3 benchmarks/master_weights_step.py --data-dir $DATA --encoder $ENC --batch 128 \
  --variants peer,master,master-combo-nosplit --out $R/knobs-b128.json > /dev/null 2> $R/knobs-b128.log
mark knobs-b128 $?
grep -h '^{' $R/knobs-b128.log | cut -c1-300
grep -h "Error" $R/knobs-b128.log | tail -3
