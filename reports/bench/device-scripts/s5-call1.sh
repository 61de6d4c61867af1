#!/bin/bash
# s5-call1 (1 GPU): CUDA tests of the packed step; configs/default.yaml end to end with
# model.packing=on (one encoder pass per step, graphs), 2 seeds; the same with train.compile=on
# (cold inductor cache per seed, then warm); evaluation throughput; bert-base profiles.
source reports/bench/device-scripts/s5-common.sh s5-call1
which ncu > $R/ncu.txt 2>&1; nvidia-smi --query-gpu=name,clocks.max.sm --format=csv >> $R/ncu.txt 2>&1
timeout 100 python3 -m pytest -q -p no:cacheprovider tests/test_packing_cuda.py tests/test_packed_training.py \
  tests/test_cudagraph.py -k "not compiled" > $R/pytest.log 2>&1; mark pytest $?
E2E="--data-dir $DATA --model.encoder=$ENC --model.packing=on"
timeout $(( $(left) - 5 )) python3 benchmarks/e2e.py --preset configs/default.yaml --seeds 0,1 --run packed=src \
  --keep /tmp/e2e-p --out $R/e2e-default-packed.json -- $E2E 2> $R/e2e-default-packed.log >/dev/null
mark e2e-default-packed $?
cp /tmp/e2e-p/packed-seed0/train.log $R/default-packed-seed0-train.log 2>/dev/null
for seed in 0 1; do
  [ $(left) -lt 90 ] && break
  TORCHINDUCTOR_CACHE_DIR=/tmp/ind-$seed timeout $(( $(left) - 5 )) python3 benchmarks/e2e.py --preset configs/default.yaml \
    --seeds $seed --run compiled-cold=src --keep /tmp/e2e-c --out $R/e2e-default-compiled-cold-$seed.json \
    -- $E2E --train.compile=on 2> $R/e2e-default-compiled-cold-$seed.log >/dev/null
  mark e2e-default-compiled-cold-$seed $?
done
cp /tmp/e2e-c/compiled-cold-seed0/train.log $R/default-compiled-seed0-train.log 2>/dev/null
if [ $(left) -gt 90 ]; then
  TORCHINDUCTOR_CACHE_DIR=/tmp/ind-0 timeout $(( $(left) - 5 )) python3 benchmarks/e2e.py --preset configs/default.yaml \
    --seeds 0 --run compiled-warm=src --keep /tmp/e2e-w --out $R/e2e-default-compiled-warm-0.json \
    -- $E2E --train.compile=on 2> $R/e2e-default-compiled-warm-0.log >/dev/null
  mark e2e-default-compiled-warm-0 $?
fi
[ $(left) -gt 70 ] && { timeout $(( $(left) - 5 )) python3 benchmarks/eval_throughput.py --data-dir $DATA --encoder $ENC \
  --config configs/default.yaml --out $R/eval_throughput.json > $R/eval_throughput.log 2>&1; mark eval $?; }
for b in 32 128; do
  [ $(left) -lt 50 ] && break
  timeout $(( $(left) - 5 )) python3 benchmarks/profile_step.py --data-dir $DATA --encoder $ENC --config bert-base \
    --batch $b --out $R/profile-bert-base-b$b.json > $R/profile-bert-base-b$b.log 2>&1; mark profile-b$b $?
done
