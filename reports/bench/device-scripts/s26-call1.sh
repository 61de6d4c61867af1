#!/bin/bash
# s26-call1 (1 GPU): the CUDA tests whose code changed since the last GPU run (the stacked q/k/v
# tensor, the weight-gradient stream, the one-kernel attention backward); the attention kernels
# alone (split and fused backward) at bert-base and MiniLM-L6 shapes; then bert-base's packed
# master-weights step at batch 32, the peer first.
export BUDGET=570
source reports/bench/device-scripts/s5-common.sh s26-call1
rm -f $R/*
nvidia-smi --query-gpu=name,clocks.max.sm,clocks.sm,power.limit --format=csv > $R/gpu.txt 2>&1
timeout 220 python3 -m pytest -q -s -p no:cacheprovider tests/test_train_ops.py tests/test_packing_cuda.py \
  tests/test_varlen_triton.py tests/test_packed_training.py tests/test_eval_graphs_cuda.py > $R/pytest.log 2>&1
mark pytest $?
tail -8 $R/pytest.log
timeout 60 python3 benchmarks/attention_varlen.py --data-dir $DATA --encoder $ENC --configs bert-base,minilm-l6 \
  --batches 32,128 --impls flash,triton-32,triton-32-fused --out $R/attn.json > /dev/null 2> $R/attn.log
mark attn $?
timeout 60 python3 benchmarks/attention_varlen.py --mask-check --out $R/mask.json > /dev/null 2> $R/mask.log
mark mask $?
timeout $(( $(left) - 10 )) python3 benchmarks/master_weights_step.py --data-dir $DATA --encoder $ENC --batch 32 \
  --variants peer,master --out $R/step-b32.json > /dev/null 2> $R/step-b32.log
mark step-b32 $?
grep -h '^{' $R/step-b32.log | cut -c1-260
grep -h "Error" $R/step-b32.log $R/attn.log | tail -3
