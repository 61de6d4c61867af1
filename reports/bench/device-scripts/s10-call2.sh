#!/bin/bash
# s10-call2 (1 GPU): our Triton kernel now draws its dropout mask as eight 16-bit numbers per
# Philox call (s10-call1 drew one per call with tl.rand; with dropout its forward took twice as
# long as without). The kernel's and the packed paths' CUDA tests, the dropout-mask check, kernel
# timings; the bert-base train step at batch 32 against the strongest peer; configs/default.yaml
# end to end with an empty Triton cache; the bert-base train step at batch 128.
source reports/bench/device-scripts/s5-common.sh s10-call2
rm -f $R/*
prime
export TRITON_CACHE_DIR=/tmp/triton-tests
timeout 100 python3 -m pytest -q -p no:cacheprovider tests/test_varlen_triton.py tests/test_packing_cuda.py > $R/pytest.log 2>&1
mark pytest $?
timeout 60 python3 benchmarks/attention_varlen.py --mask-check --out $R/mask-check.json > /dev/null 2> $R/mask-check.log
mark mask-check $?
timeout 90 python3 benchmarks/attention_varlen.py --data-dir $DATA --encoder $ENC --impls flash,efficient,triton-16,triton-32 \
  --out $R/attention.json > /dev/null 2> $R/attention.log
mark attention $?
ts bert-base 32 minbert-packed-compile-triton,transformers-sdpa-ro
export TRITON_CACHE_DIR=/tmp/triton-e2e  # empty: the first seed compiles the kernels, as a user's first run does
[ $(left) -gt 120 ] && e2e main default
ts bert-base 128 minbert-packed-compile-triton,transformers-sdpa-ro
python3 -c "import json; [print(r) for r in json.load(open('$R/mask-check.json'))['records'] if 'triton' in r['impl']]"
python3 -c "
import json
for r in json.load(open('$R/attention.json'))['records']:
    print(r['case'], r['impl'], *(r.get(k) for k in ('fwd_us_p0.0', 'fwd_bwd_us_p0.0', 'fwd_us_p0.1', 'fwd_bwd_us_p0.1', 'error')))"
grep -h '^{' $R/ts-*.log | cut -c1-200
