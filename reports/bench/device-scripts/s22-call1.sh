#!/bin/bash
# s22-call1 (1 GPU): the CUDA tests of the bias gradients' ones (tests/test_train_ops.py), the
# master-weights, CUDA graph and CUDA resume tests; bert-base's packed step at batch 32 in one
# process (the peer first, the master-weights step under inductor's defaults and with combo
# kernels and unsplit reductions); a profile of the last of these.
export BUDGET=570
mkdir -p .device && tar xzf .device/sst-trees.tgz -C .device
source reports/bench/device-scripts/s5-common.sh s22-call1
rm -f $R/*
nvidia-smi --query-gpu=name,clocks.max.sm,clocks.sm,power.limit --format=csv > $R/gpu.txt 2>&1
timeout 130 python3 -m pytest -q -s -p no:cacheprovider tests/test_train_ops.py tests/test_master_weights.py \
  tests/test_cudagraph.py tests/test_resume_cuda.py > $R/pytest.log 2>&1; mark pytest $?
tail -8 $R/pytest.log
timeout $(( $(left) - 130 )) python3 benchmarks/master_weights_step.py --data-dir $DATA --encoder $ENC --batch 32 \
  --variants peer,master,master-combo-nosplit --out $R/knobs-b32.json > /dev/null 2> $R/knobs-b32.log
mark knobs-b32 $?
grep -h '^{' $R/knobs-b32.log | cut -c1-260
grep -h "Error" $R/knobs-b32.log | tail -3
pstep master-combo-nosplit
grep -h "Error" $R/profile-master-combo-nosplit.log | tail -3
