#!/bin/bash
# Candidate recipes for configs/quick.yaml on one GPU (fp32), full dev sets; JSON lines to $OUT.
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD/src
python3 reports/bench/device-scripts/quick_search.py .device/all-MiniLM-L6-v2-fp16 .device/data .device/sst-trees /tmp/qs "$@" \
  2> $OUT/quick_search.log | tee $OUT/quick_search.jsonl
