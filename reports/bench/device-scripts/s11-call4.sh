#!/bin/bash
# s11-call4 (1 GPU): both presets end to end, this version ("after": R-Drop's two passes as one
# encoder pass, the Triton kernel compiled by two children while the model and data load) against
# the previous one ("before": commit cca93f7, exported to .device/before/src with git archive), on
# one machine, each run with an empty Triton cache (benchmarks/e2e.py --fresh-triton-cache).
# Order: best after, default after, default before, best before.
source reports/bench/device-scripts/s5-common.sh s11-call4
rm -f $R/*
prime
one() {  # one NAME SRC PRESET ARGS...: seeds 0 and 1 of SRC as run NAME
  local name=$1 src=$2 preset=$3; shift 3
  [ $(left) -lt 60 ] && return
  timeout $(( $(left) - 5 )) python3 benchmarks/e2e.py --preset configs/$preset.yaml --seeds 0,1 --run $name=$src \
    --fresh-triton-cache --keep /tmp/e2e-$preset --out $R/e2e-$preset-$name.json \
    -- --data-dir $DATA --model.encoder=$ENC "$@" 2> $R/e2e-$preset-$name.log >/dev/null
  mark e2e-$preset-$name $?
  for s in 0 1; do cp /tmp/e2e-$preset/$name-seed$s/summary.json $R/$preset-$name-seed$s-summary.json 2>/dev/null; done
  cp /tmp/e2e-$preset/$name-seed0/train.log $R/$preset-$name-seed0-train.log 2>/dev/null
}
BEST=--tasks.sst.phrases_file=$PWD/.device/sst-trees/train.txt
one after src best $BEST
one after src default
one before $PWD/.device/before/src default
one before $PWD/.device/before/src best $BEST
