#!/bin/bash
# s29-call1 (1 GPU): the CUDA tests of the code changed since the last GPU run: the embedding
# rows' AdamW kernel after its review fixes (IEEE sqrt and divisions), the rows in the
# benchmark's captured steps through attach_lazy_rows, the two-stream products through one matmul
# helper, the attention backward's D buffer; then minbert train with optim.embedding_rows and one
# CUDA graph per step (tests/test_embedding_rows.py's CUDA runs, never run on a GPU).
export BUDGET=380
source reports/bench/device-scripts/s5-common.sh s29-call1
rm -f $R/*
nvidia-smi --query-gpu=name,clocks.max.sm,clocks.sm,power.limit --format=csv > $R/gpu.txt 2>&1
timeout 200 python3 -m pytest -q -s -p no:cacheprovider tests/test_lazy_rows.py tests/test_bench_knobs.py \
  tests/test_train_ops.py tests/test_varlen_triton.py > $R/pytest.log 2>&1
mark pytest $?
tail -3 $R/pytest.log
timeout $(( $(left) - 5 )) python3 -m pytest -q -s -p no:cacheprovider tests/test_embedding_rows.py -k cuda_run \
  > $R/pytest-rows.log 2>&1
mark pytest-rows $?
tail -3 $R/pytest-rows.log
