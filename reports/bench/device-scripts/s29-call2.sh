#!/bin/bash
# s29-call2 (1 GPU): the two CUDA tests that failed in s29-call1, after their fixes: the benchmark's
# rows variant with its graphs' gradient buffers leaving the rows' table out (as the trainer's
# step does), and minbert train with optim.embedding_rows against the dense update in fp32
# without autocast (packed reference attention).
export BUDGET=300
source reports/bench/device-scripts/s5-common.sh s29-call2
rm -f $R/*
nvidia-smi --query-gpu=name,clocks.max.sm,clocks.sm,power.limit --format=csv > $R/gpu.txt 2>&1
timeout 150 python3 -m pytest -q -s -p no:cacheprovider tests/test_bench_knobs.py > $R/pytest.log 2>&1
mark pytest $?
tail -3 $R/pytest.log
timeout $(( $(left) - 5 )) python3 -m pytest -q -s -p no:cacheprovider tests/test_embedding_rows.py -k cuda_run \
  > $R/pytest-rows.log 2>&1
mark pytest-rows $?
tail -3 $R/pytest-rows.log
