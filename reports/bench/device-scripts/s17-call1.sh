#!/bin/bash
# s17-call1 (1 GPU): where a default run's first epoch and its host time go, and the default preset
# end to end with three kernel compile children. benchmarks/run_phases.py on configs/default.yaml:
# once with an empty Triton cache (phases-cold, the graph captures and eager steps summed), once
# with that cache under cProfile (phases-prof, profile-host.txt: the main thread's top functions).
# Then benchmarks/e2e.py, 2 seeds, an empty Triton cache per run.
source reports/bench/device-scripts/s5-common.sh s17-call1
rm -f $R/*
prime
SUMS="--sum minbert.training.cudagraph:GraphedSteps._capture --sum minbert.training.cudagraph:GraphedSteps._eager
 --sum minbert.inference.graphs:GraphedForward._capture --sum minbert.training.trainer:Trainer._start_epoch"
# phases NAME TRITON_CACHE EXTRA...: configs/default.yaml under run_phases.py (phases-NAME.json, .log)
phases() {
  local name=$1 cache=$2; shift 2
  [ $(left) -lt 60 ] && return
  local t0=$EPOCHREALTIME
  TRITON_CACHE_DIR=$cache timeout 120 python3 benchmarks/run_phases.py --out $R/phases-$name.json $SUMS "$@" \
    -- train --config configs/default.yaml --run-dir /tmp/ph-$name --overwrite --no-progress --data-dir $DATA \
    --model.encoder=$ENC > /dev/null 2> $R/phases-$name.log
  mark phases-$name $?
  awk "BEGIN{print \"process total\", $EPOCHREALTIME - $t0}" >> $R/phases-$name.log
  cp /tmp/ph-$name/summary.json $R/phases-$name-summary.json 2>/dev/null
}
rm -rf /tmp/tc
phases cold /tmp/tc
phases prof /tmp/tc --profile $R/profile-host.txt
[ $(left) -gt 100 ] && ab after src default
for f in $R/phases-*.json; do case $f in *summary*) continue;; esac; python3 -c "
import json; d=json.load(open('$f')); print('$f'.split('/')[-1], d['main_returned_s'], d['children'])
print(' '.join(f\"{p['name']}={p['end_s']-p['start_s']:.2f}@{p['start_s']:.2f}\" for p in d['phases']))
print(d['sums'])"; done
head -60 $R/profile-host.txt
