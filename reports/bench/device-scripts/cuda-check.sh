#!/bin/bash
# The restructured training loop on one H200: the CUDA tests, then configs/default.yaml end to end
# (CUDA graphs, flat buffers), whose dev overall is compared with reports/speed.json's (0.650, 0.652).
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD/src
export MINBERT_TEST_TOKENIZER_DIR=$PWD/.device/all-MiniLM-L6-v2-fp16 MINBERT_DATA_DIR=$PWD/.device/data
START=$(date +%s)
timeout 100 python3 -m pytest -q -p no:cacheprovider -k "not compiled" tests/test_cudagraph.py > $OUT/pytest_cuda.log 2>&1
echo "pytest rc=$? at $(($(date +%s)-START))s" | tee -a $OUT/timeline.txt
timeout 200 python3 -m minbert train --config configs/default.yaml --data-dir .device/data --run-dir /tmp/default \
  --model.encoder=.device/all-MiniLM-L6-v2-fp16 --no-progress > $OUT/default_train.log 2>&1
echo "default rc=$? at $(($(date +%s)-START))s" | tee -a $OUT/timeline.txt
cp /tmp/default/summary.json $OUT/default_summary.json 2>/dev/null
tail -3 $OUT/pytest_cuda.log; tail -4 $OUT/default_train.log
