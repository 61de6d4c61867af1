#!/bin/bash
# s27-call2 (1 GPU): the CUDA tests of the embedding rows' AdamW kernel (1 - b1 and 1 - b2 now
# from the host); bert-base's packed master-weights step at batch 32 in one process, the peer
# first: with the weight-gradient stream, the word embedding's update on the rows a step reads
# and programmatic dependent launch; then the same with coordinate-descent tuning.
export BUDGET=395
source reports/bench/device-scripts/s5-common.sh s27-call2
rm -f $R/*
nvidia-smi --query-gpu=name,clocks.max.sm,clocks.sm,power.limit --format=csv > $R/gpu.txt 2>&1
timeout 60 python3 -m pytest -q -s -p no:cacheprovider tests/test_lazy_rows.py > $R/pytest.log 2>&1
mark pytest $?
tail -3 $R/pytest.log
timeout $(( $(left) - 8 )) python3 benchmarks/master_weights_step.py --data-dir $DATA --encoder $ENC --batch 32 \
  --variants peer,master-wgs-rows-pdl,master-wgs-rows-pdl-cdt --out $R/step-b32.json \
  > /dev/null 2> $R/step-b32.log
mark step-b32 $?
grep -h '^{' $R/step-b32.log | cut -c1-260
grep -h "Error" $R/step-b32.log | tail -3
