#!/bin/bash
# s9-call2 (1 GPU): benchmarks/attention_varlen.py again, now timing CUDA-graph replays (GPU time
# only; s9-call1's eager timings were bound by the host's launches): FlashAttention varlen,
# memory-efficient varlen and binned dense attention, with and without dropout, then FlexAttention
# (no dropout) for bert-base.
source reports/bench/device-scripts/s5-common.sh s9-call2
unset PYTHONDONTWRITEBYTECODE
export PYTHONPYCACHEPREFIX=/tmp/pyc
rm -f $R/*
timeout $(( $(left) - 90 )) python3 benchmarks/attention_varlen.py --data-dir $DATA --encoder $ENC \
  --out $R/attention.json > /dev/null 2> $R/attention.log
mark attention $?
timeout $(( $(left) - 5 )) python3 benchmarks/attention_varlen.py --data-dir $DATA --encoder $ENC \
  --configs bert-base --impls flash,flex --out $R/attention-flex.json > /dev/null 2> $R/attention-flex.log
mark attention-flex $?
grep -h "^{" $R/attention*.log | cut -c1-330
