#!/bin/bash
# s27-call2 (1 GPU): the CUDA tests of the code changed since the last GPU run (the two-stream
# products written through one matmul helper, the attention backward's D buffer, the one-kernel
# backward's second version); bert-base's packed master-weights step at batch 32 in one process
# with the stream, without and with programmatic dependent launch, the peer first; then the
# default preset end to end (2 seeds, an empty Triton cache per run).
export BUDGET=560
source reports/bench/device-scripts/s5-common.sh s27-call2
rm -f $R/*
nvidia-smi --query-gpu=name,clocks.max.sm,clocks.sm,power.limit --format=csv > $R/gpu.txt 2>&1
timeout 200 python3 -m pytest -q -s -p no:cacheprovider tests/test_train_ops.py tests/test_varlen_triton.py \
  tests/test_packed_training.py > $R/pytest.log 2>&1
mark pytest $?
tail -4 $R/pytest.log
timeout $(( $(left) - 150 )) python3 benchmarks/master_weights_step.py --data-dir $DATA --encoder $ENC --batch 32 \
  --variants peer,master-wgs,master-wgs-pdl --out $R/step-b32.json > /dev/null 2> $R/step-b32.log
mark step-b32 $?
grep -h '^{' $R/step-b32.log | cut -c1-260
grep -h "Error" $R/step-b32.log | tail -3
prime
ab now src default
