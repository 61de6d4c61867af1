#!/bin/bash
# s22-call3 (1 GPU): configs/default.yaml and configs/best.yaml end to end (benchmarks/e2e.py,
# 2 seeds, an empty Triton cache per run) with the bias gradients' ones kept in blocks
# (model/train_ops.py, bias_ones); then, with time left, bert-base's packed step at batch 32 in
# one process: the peer first, the master-weights step with combo kernels, unsplit reductions
# and coordinate-descent tuning.
export BUDGET=540
mkdir -p .device && tar xzf .device/sst-trees.tgz -C .device
source reports/bench/device-scripts/s5-common.sh s22-call3
rm -f $R/*
prime
ab ones src default
[ $(left) -gt 100 ] && ab ones src best
if [ $(left) -gt 260 ]; then
  timeout $(( $(left) - 5 )) python3 benchmarks/master_weights_step.py --data-dir $DATA --encoder $ENC --batch 32 \
    --variants peer,master-combo-nosplit-cdt --out $R/knobs-b32.json > /dev/null 2> $R/knobs-b32.log
  mark knobs-b32 $?
  grep -h '^{' $R/knobs-b32.log | cut -c1-260
fi
for f in $R/*-summary.json; do python3 -c "
import json; d=json.load(open('$f')); t=d['throughput']
print('$f'.split('/')[-1], d['wall_s'], d['dev']['overall'] if 'dev' in d else '', t['epoch_train_s'])"; done
