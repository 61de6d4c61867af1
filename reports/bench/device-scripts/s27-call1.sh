#!/bin/bash
# s27-call1 (1 GPU): the CUDA tests of the embedding rows' AdamW kernel; the one-kernel attention
# backward, now in tiles for long sequences: the kernels alone and the dropout-mask check;
# bert-base's packed step at batch 32 in one process: the master-weights step with the
# weight-gradient stream, then with the word embedding's update on the rows a step reads, with
# programmatic dependent launch, with the one-kernel backward; the shipped step without and with
# the stream.
export BUDGET=520
source reports/bench/device-scripts/s5-common.sh s27-call1
rm -f $R/*
nvidia-smi --query-gpu=name,clocks.max.sm,clocks.sm,power.limit --format=csv > $R/gpu.txt 2>&1
timeout 60 python3 -m pytest -q -s -p no:cacheprovider tests/test_lazy_rows.py > $R/pytest.log 2>&1
mark pytest $?
tail -3 $R/pytest.log
timeout 40 python3 benchmarks/attention_varlen.py --data-dir $DATA --encoder $ENC --configs bert-base,minilm-l6 \
  --batches 32,128 --impls triton-32,triton-32-fused --out $R/attn.json > /dev/null 2> $R/attn.log
mark attn $?
timeout 30 python3 benchmarks/attention_varlen.py --mask-check --out $R/mask.json > /dev/null 2> $R/mask.log
mark mask $?
timeout $(( $(left) - 8 )) python3 benchmarks/master_weights_step.py --data-dir $DATA --encoder $ENC --batch 32 \
  --variants master-wgs,master-wgs-rows,master-wgs-pdl,master-wgs-fbwd,whole,whole-wgs --out $R/knobs-b32.json \
  > /dev/null 2> $R/knobs-b32.log
mark knobs-b32 $?
grep -h '^{' $R/knobs-b32.log | cut -c1-200
grep -h "Error" $R/knobs-b32.log | tail -3
python3 -c "
import json; d=json.load(open('$R/attn.json'))
for r in d['records']: print(r['case'], r['impl'], r['fwd_bwd_us_p0.0'], r['fwd_bwd_us_p0.1'])" 2>/dev/null
