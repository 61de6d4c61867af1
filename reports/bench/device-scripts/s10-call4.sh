#!/bin/bash
# s10-call4 (1 GPU): configs/best.yaml end to end with an empty Triton cache for seed 0
# (s10-call3 ran it on the machine of s10-call2, whose Triton cache already held the kernels).
source reports/bench/device-scripts/s5-common.sh s10-call4
rm -f $R/*
prime
export TRITON_CACHE_DIR=/tmp/triton-best-$(date +%s)
{ echo "Triton cache: $TRITON_CACHE_DIR"; ls $TRITON_CACHE_DIR 2>&1 | head -2; } >> $R/env.txt
e2e main best --tasks.sst.phrases_file=$PWD/.device/sst-trees/train.txt
