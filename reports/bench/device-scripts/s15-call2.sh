#!/bin/bash
# The tree that ran: git c33761b with s15-call2.patch applied (train_ops.py); .device/before: c33761b.
# (As run, the script defined tsx itself; s5-common.sh's tsx is the same function.)
# s15-call2 (1 GPU): this tree (bias gradients as one column sum inside minbert::linear_grads, no
# ones vector; the compiled step's weight copies as one multi-tensor copy into one buffer, as
# eager) against .device/before (the previous commit) and the strongest peer: bert-base at batch
# 32 (this tree and the peer in one process, the previous commit in the next), a profile of this
# tree's step with inductor's generated code, then bert-base at 128 and MiniLM-L6 at 128 and 32
# with the peer, as far as the time goes.
source reports/bench/device-scripts/s5-common.sh s15-call2
rm -f $R/*
ts bert-base 32 minbert-packed-compile,transformers-sdpa-ro
tsx before .device/before
TORCH_LOGS=output_code pstep minbert-packed-compile
gzip -f $R/profile-minbert-packed-compile.log
ts bert-base 128 minbert-packed-compile,transformers-sdpa-ro
ts minilm-l6 128 minbert-packed-compile,transformers-sdpa-ro
ts minilm-l6 32 minbert-packed-compile,transformers-sdpa-ro
grep -h '^{' $R/ts-*.log | cut -c1-200
