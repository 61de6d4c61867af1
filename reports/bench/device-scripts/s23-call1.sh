#!/bin/bash
# s23-call1 (1 GPU): configs/default.yaml end to end (benchmarks/e2e.py, 2 seeds, an empty Triton
# cache per run), whose summary.json files time the set-up, the attention kernel's compile wait and
# the epoch ends; then seed 0 once more under py-spy (a sampling profiler, all processes, idle
# frames included, raw stacks), to see where the seconds before the first step go.
export BUDGET=560
mkdir -p .device/sst-trees  # (the default preset reads no SST trees; the carry left them out)
tar xzf .device/data.tgz -C .device  # (carried packed)
gunzip -c .device/py-spy.gz > /tmp/py-spy && chmod +x /tmp/py-spy
source reports/bench/device-scripts/s5-common.sh s23-call1
rm -f $R/*
nvidia-smi --query-gpu=name,clocks.max.sm,clocks.sm,power.limit --format=csv > $R/gpu.txt 2>&1
nproc >> $R/gpu.txt; grep -m1 "model name" /proc/cpuinfo >> $R/gpu.txt
prime
ab base src default
if [ $(left) -gt 90 ]; then
  export TRITON_CACHE_DIR=$(mktemp -d)
  timeout 80 /tmp/py-spy record -r 200 --idle --subprocesses -f raw -o $R/pyspy-default-seed0.txt -- \
    python3 -m minbert train --config configs/default.yaml --run-dir /tmp/spy --overwrite --no-progress \
    --train.seed=0 --data-dir $DATA --model.encoder=$ENC > $R/pyspy.log 2>&1
  mark pyspy $?
  cp /tmp/spy/summary.json $R/pyspy-summary.json 2>/dev/null
  tail -3 $R/pyspy.log
fi
for f in $R/*summary.json; do python3 -c "
import json; d=json.load(open('$f')); t=d['throughput']
print('$f'.split('/')[-1], d['wall_s'], d['dev']['overall'], {k: t.get(k) for k in ('setup_s','kernel_wait_s','epoch_train_s','epoch_end_s')})"; done
