#!/bin/bash
# s21-call3 (1 GPU): as s21-call2, whose eager fused steps failed: the master update as one
# compiled function for all parameter groups. The CUDA resume test (with and without master
# weights) and the master-weights tests; then benchmarks/e2e.py (2 seeds, empty Triton cache
# each) on configs/default.yaml and configs/best.yaml (our AdamW) with master weights; then
# bert-base's shipped packed step at batch 128 with inductor's defaults and with combo kernels
# and unsplit reductions, in one process.
export BUDGET=570
mkdir -p .device && tar xzf .device/sst-trees.tgz -C .device
source reports/bench/device-scripts/s5-common.sh s21-call3
rm -f $R/*
prime
gpu_pytest 170 tests/test_resume_cuda.py tests/test_master_weights.py
ab master src default --optim.master_weights=true
ab master src best --optim.name=adamw --optim.master_weights=true
if [ $(left) -gt 150 ]; then
  timeout $(( $(left) - 10 )) python3 benchmarks/master_weights_step.py --data-dir $DATA --encoder $ENC --batch 128 \
    --variants whole,whole-combo-nosplit --out $R/whole-knobs-b128.json > /dev/null 2> $R/whole-knobs-b128.log
  mark whole-knobs-b128 $?
  grep -h '^{' $R/whole-knobs-b128.log | cut -c1-200
fi
