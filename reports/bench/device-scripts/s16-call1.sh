#!/bin/bash
# s16-call1 (1 GPU): where a default run's wall time goes, by benchmarks/run_phases.py (the CLI in
# one process, its phases time-stamped, the compile children's exits recorded). .device/before is
# git b5195b5 (two compile children: forward, backward); this tree starts three (forward,
# backward-dq, backward-dkdv). Each tree once with an empty Triton cache (a first run), then once
# with the cache that run filled; then this tree end to end (benchmarks/e2e.py, 2 seeds, each with
# an empty Triton cache).
source reports/bench/device-scripts/s5-common.sh s16-call1
rm -f $R/*
prime
cp benchmarks/run_phases.py .device/before/benchmarks/
# phases NAME TREE TRITON_CACHE: configs/default.yaml under TREE's run_phases.py (phases-NAME.json, .log)
phases() {
  [ $(left) -lt 60 ] && return
  local t0=$EPOCHREALTIME
  PYTHONPATH=$2/src TRITON_CACHE_DIR=$3 timeout 120 python3 $2/benchmarks/run_phases.py --out $R/phases-$1.json \
    -- train --config configs/default.yaml --run-dir /tmp/ph-$1 --overwrite --no-progress --data-dir $DATA \
    --model.encoder=$ENC > /dev/null 2> $R/phases-$1.log
  mark phases-$1 $?
  awk "BEGIN{print \"process total\", $EPOCHREALTIME - $t0}" >> $R/phases-$1.log
}
rm -rf /tmp/tc-before /tmp/tc-after
phases before-cold $PWD/.device/before /tmp/tc-before
phases after-cold $PWD /tmp/tc-after
phases after-warm $PWD /tmp/tc-after
phases before-warm $PWD/.device/before /tmp/tc-before
[ $(left) -gt 100 ] && ab after src default
for f in $R/phases-*.json; do python3 -c "
import json,sys; d=json.load(open('$f')); print('$f'.split('/')[-1], d['main_returned_s'], d['children'])
print(' '.join(f\"{p['name']}={p['end_s']-p['start_s']:.2f}@{p['start_s']:.2f}\" for p in d['phases']))"; done
