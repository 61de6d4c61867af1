#!/bin/bash
# s11-call4 (1 GPU): both presets end to end, this version ("after": R-Drop's two passes as one
# encoder pass, the Triton kernel compiled by two children while the model and data load) against
# the previous one ("before": commit cca93f7, exported to .device/before/src with git archive), on
# one machine, each run with an empty Triton cache (benchmarks/e2e.py --fresh-triton-cache).
# Order: best after, default after, default before, best before.
source reports/bench/device-scripts/s5-common.sh s11-call4
rm -f $R/*
prime
BEST=--tasks.sst.phrases_file=$PWD/.device/sst-trees/train.txt
ab after src best $BEST
ab after src default
ab before $PWD/.device/before/src default
ab before $PWD/.device/before/src best $BEST
