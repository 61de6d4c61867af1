#!/bin/bash
# s9-call1 (1 GPU): the CUDA tests of graphed evaluation on the bf16-weight copy (their last edits
# had not run on a GPU); then benchmarks/attention_varlen.py: packed attention kernels (FlashAttention
# varlen, memory-efficient varlen, cuDNN ragged, sequences binned into dense 64/128-token blocks,
# FlexAttention) on real SST and QQP lengths, forward and forward + backward.
source reports/bench/device-scripts/s5-common.sh s9-call1
unset PYTHONDONTWRITEBYTECODE
export PYTHONPYCACHEPREFIX=/tmp/pyc
rm -f $R/*
timeout 150 python3 -m pytest -q -p no:cacheprovider tests/test_eval_graphs_cuda.py tests/test_eval_bf16.py > $R/pytest.log 2>&1
mark pytest $?
timeout $(( $(left) - 100 )) python3 benchmarks/attention_varlen.py --data-dir $DATA --encoder $ENC \
  --out $R/attention.json > /dev/null 2> $R/attention.log
mark attention $?
timeout $(( $(left) - 5 )) python3 benchmarks/attention_varlen.py --data-dir $DATA --encoder $ENC \
  --configs bert-base --batches 128 --impls flash,flex --out $R/attention-flex.json > /dev/null 2> $R/attention-flex.log
mark attention-flex $?
grep -h "^{" $R/attention*.log | cut -c1-330
