#!/bin/bash
# s21-call4 (1 GPU): as s21-call3, whose compiled update failed to trace under torch 2.11: the
# master update as one compiled function for all parameter groups, each group's foreach update
# in turn. The CUDA resume test (with and without master weights) and the master-weights tests;
# benchmarks/e2e.py (2 seeds, empty Triton cache each) on configs/default.yaml and
# configs/best.yaml (our AdamW) with master weights; then, if time is left, bert-base's packed
# step at batch 32 in one process: the peer and the master-weights step with combo kernels and
# unsplit reductions.
export BUDGET=470
mkdir -p .device && tar xzf .device/sst-trees.tgz -C .device
source reports/bench/device-scripts/s5-common.sh s21-call4
rm -f $R/*
prime
gpu_pytest 150 tests/test_resume_cuda.py tests/test_master_weights.py
ab master src default --optim.master_weights=true
ab master src best --optim.name=adamw --optim.master_weights=true
if [ $(left) -gt 200 ]; then
  timeout $(( $(left) - 10 )) python3 benchmarks/master_weights_step.py --data-dir $DATA --encoder $ENC --batch 32 \
    --variants peer,master-combo-nosplit --out $R/knobs-b32.json > /dev/null 2> $R/knobs-b32.log
  mark knobs-b32 $?
  grep -h '^{' $R/knobs-b32.log | cut -c1-200
fi
