#!/bin/bash
# The tree that ran: git c33761b with s15-call1.patch applied (train_ops.py); .device/before: c33761b.
# (As run, the script defined tsx itself; s5-common.sh's tsx is the same function.)
# s15-call1 (1 GPU): bert-base's train step at batch 32. This tree (compiled, the bias gradients
# as column sums that inductor may fuse with the kernels producing g) with the strongest peer in
# one process; .device/before (the previous commit: bias gradients as GEMMs) in the next process;
# a profile of this tree's step with inductor's generated code (TORCH_LOGS=output_code); then
# configs/default.yaml end to end with this tree, an empty Triton cache per run.
source reports/bench/device-scripts/s5-common.sh s15-call1
rm -f $R/*
prime
ts bert-base 32 minbert-packed-compile,transformers-sdpa-ro
tsx before .device/before
TORCH_LOGS=output_code pstep minbert-packed-compile
gzip -f $R/profile-minbert-packed-compile.log
[ $(left) -gt 90 ] && ab after src default
grep -h '^{' $R/ts-*.log | cut -c1-260
