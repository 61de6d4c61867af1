#!/bin/bash
# s11-call2 (1 GPU): R-Drop's two passes as one encoder pass, and our Triton kernel compiled in a
# child process while the run loads its data. The CUDA test of the background compile; both
# presets end to end (seed 0 with an empty Triton cache, as a user's first run); the Triton
# cache after a run (what the run itself compiled); one seed of default under cProfile with the
# callers of the host allocations.
source reports/bench/device-scripts/s5-common.sh s11-call2
rm -f $R/*
prime
export TRITON_CACHE_DIR=/tmp/triton-tests
timeout 120 python3 -m pytest -q -p no:cacheprovider tests/test_packing_cuda.py -k "background or graph" > $R/pytest.log 2>&1
mark pytest $?
export TRITON_CACHE_DIR=/tmp/triton-best  # empty: seed 0 compiles the kernels
e2e main best --tasks.sst.phrases_file=$PWD/.device/sst-trees/train.txt
export TRITON_CACHE_DIR=/tmp/triton-default
e2e main default
{ for d in /tmp/triton-best /tmp/triton-default; do echo "$d: $(ls $d | wc -l) entries, $(ls $d/*/*.cubin 2>/dev/null | wc -l) kernels"; done; } >> $R/env.txt
[ $(left) -gt 90 ] && {
  export TRITON_CACHE_DIR=/tmp/triton-prof
  timeout $(( $(left) - 5 )) python3 -m cProfile -o /tmp/default.prof -m minbert train --config configs/default.yaml \
    --run-dir /tmp/prof-default --overwrite --no-progress --data-dir $DATA --model.encoder=$ENC > $R/prof-default.log 2>&1
  mark prof-default $?
  python3 -c "
import pstats, sys
s = pstats.Stats('/tmp/default.prof', stream=sys.stdout)
s.sort_stats('tottime').print_stats(30)
s.print_callers('built-in method torch.empty|pin_memory|host_snapshot|_host_emptyCache')" > $R/prof-default.txt 2>&1
}
