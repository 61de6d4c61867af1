#!/bin/bash
# s20-call1 (1 GPU): master weights (optim.master_weights) through minbert train on a GPU. The CUDA
# resume test with and without master weights and the master-weights tests; then benchmarks/e2e.py
# (2 seeds, empty Triton cache each) on configs/default.yaml without and with master weights, and
# on configs/best.yaml as shipped and with our AdamW and master weights.
# (As run, the script called pytest itself; s5-common.sh's gpu_pytest is the same command.)
export BUDGET=560
mkdir -p .device && tar xzf .device/sst-trees.tgz -C .device
source reports/bench/device-scripts/s5-common.sh s20-call1
rm -f $R/*
prime
gpu_pytest 150 tests/test_resume_cuda.py tests/test_master_weights.py
ab base src default
ab master src default --optim.master_weights=true
ab master src best --optim.name=adamw --optim.master_weights=true
ab base src best
