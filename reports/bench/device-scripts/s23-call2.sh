#!/bin/bash
# s23-call2 (1 GPU): where the attention-kernel compile children spend their time (the three run
# side by side as a run starts them, an empty Triton cache; twice: the machine's first CUDA and
# Triton use, then again); then configs/default.yaml end to end (benchmarks/e2e.py, 2 seeds, an
# empty Triton cache per run): the version before (git 4670f93, .device/base-src.tgz) against
# this one (torch._dynamo imported in a thread during the set-up; the plot child drawing while
# the test predictions are written), twice, in alternating order.
export BUDGET=560
mkdir -p .device/sst-trees  # (the default preset reads no SST trees; the carry left them out)
tar xzf .device/data.tgz -C .device  # (carried packed)
mkdir -p /tmp/base && tar xzf .device/base-src.tgz -C /tmp/base
source reports/bench/device-scripts/s5-common.sh s23-call2
rm -f $R/*
nvidia-smi --query-gpu=name,clocks.max.sm,clocks.sm,power.limit,persistence_mode --format=csv > $R/gpu.txt 2>&1
nproc >> $R/gpu.txt; grep -m1 "model name" /proc/cpuinfo >> $R/gpu.txt
prime
children() {
  export TRITON_CACHE_DIR=$(mktemp -d)
  local t0=$(date +%s.%N)
  for part in forward backward-dq backward-dkdv; do
    python3 reports/bench/device-scripts/s23-child-phases.py $ENC $part >> $R/children-$1.jsonl 2>> $R/children-$1.err &
  done
  wait
  echo "children $1: started $t0, all done $(date +%s.%N)" >> $R/children-$1.jsonl
  unset TRITON_CACHE_DIR
  mark children-$1 0
}
children first
children second
ab base /tmp/base/src default
ab new src default
ab new2 src default
ab base2 /tmp/base/src default
for f in $R/*summary.json; do python3 -c "
import json; d=json.load(open('$f')); t=d['throughput']
print('$f'.split('/')[-1], d['wall_s'], round(d['dev']['overall'], 4), {k: t.get(k) for k in ('setup_s','kernel_wait_s','epoch_train_s','epoch_end_s')})"; done
cat $R/children-*.jsonl
