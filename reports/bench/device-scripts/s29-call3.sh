#!/bin/bash
# s29-call3 (1 GPU): first the CUDA test of the benchmark's rows variant after its fix (the graphs'
# gradient buffers leave the rows' table out, as the trainer's step does); then bert-base's packed
# master-weights step at batch 32 in one process: the peer first, then every knob that shortened
# it at this batch stacked (the weight-gradient stream, the word embedding's update on the rows a
# step reads, programmatic dependent launch, combo kernels with reductions not split,
# coordinate-descent tuning), then without the combo kernels, unsplit reductions and tuning (the
# records are in the log if the call runs out of time).
export BUDGET=480
source reports/bench/device-scripts/s5-common.sh s29-call3
rm -f $R/*
nvidia-smi --query-gpu=name,clocks.max.sm,clocks.sm,power.limit --format=csv > $R/gpu.txt 2>&1
timeout 100 python3 -m pytest -q -s -p no:cacheprovider tests/test_bench_knobs.py -k "rows_variant" > $R/pytest.log 2>&1
mark pytest $?
tail -3 $R/pytest.log
timeout $(( $(left) - 8 )) python3 benchmarks/master_weights_step.py --data-dir $DATA --encoder $ENC --batch 32 \
  --variants peer,master-wgs-rows-pdl-combo-nosplit-cdt,master-wgs-rows-pdl --out $R/step-b32.json \
  > /dev/null 2> $R/step-b32.log
mark step-b32 $?
grep -h '^{' $R/step-b32.log | cut -c1-260
grep -h "Error" $R/step-b32.log | tail -3
