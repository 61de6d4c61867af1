#!/bin/bash
# s9-call4 (1 GPU): s9-call3's default runs lost 0.03 to 0.04 of dev overall with the
# memory-efficient varlen kernel in training. benchmarks/attention_varlen.py --mask-check: does
# each kernel's backward drop the attention probabilities its forward dropped? Then, with packed
# attention on varlen_kernel=auto (memory-efficient without dropout, FlashAttention-2's with it):
# the packing CUDA tests, configs/default.yaml end to end (2 seeds), and the MiniLM-L6 train step
# against the strongest peer.
source reports/bench/device-scripts/s5-common.sh s9-call4
rm -f $R/*
prime
timeout 60 python3 benchmarks/attention_varlen.py --mask-check --out $R/mask-check.json > /dev/null 2> $R/mask-check.log
mark mask-check $?
timeout 90 python3 -m pytest -q -p no:cacheprovider tests/test_packing_cuda.py > $R/pytest.log 2>&1
mark pytest $?
e2e main default
for b in 32 128; do
  [ $(left) -lt 60 ] && break
  timeout $(( $(left) - 5 )) python3 benchmarks/train_step.py --data-dir $DATA --encoder $ENC --configs minilm-l6 \
    --batches $b --n-batches 32 --warmup 32 --impls minbert-packed-compile,transformers-sdpa-ro \
    --out $R/ts-minilm-l6-b$b.json 2> $R/ts-minilm-l6-b$b.log >/dev/null
  mark ts-minilm-l6-$b $?
done
python3 -c "import json; [print(r) for r in json.load(open('$R/mask-check.json'))['records']]"
grep -h '^{' $R/ts-*.log | cut -c1-200
