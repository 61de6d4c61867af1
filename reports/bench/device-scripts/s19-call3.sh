#!/bin/bash
# s19-call3 (1 GPU): the AdamW update alone at bert-base size (benchmarks/optimizer_update.py):
# torch's fused kernel over the parameter list (as the step runs it) and over one flat tensor,
# and a Triton kernel over the flat tensor (fp32 and bf16 gradients; all programs, or 132 or 33).
export BUDGET=200
source reports/bench/device-scripts/s5-common.sh s19-call3
rm -f $R/*
timeout 180 python3 benchmarks/optimizer_update.py --out $R/optimizer-update.json > /dev/null 2> $R/optimizer-update.log
mark optimizer-update $?
cat $R/optimizer-update.log | tail -8
