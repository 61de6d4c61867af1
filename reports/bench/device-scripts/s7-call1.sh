#!/bin/bash
# s7-call1 (1 GPU): diagnostics before more speed work. The CUDA tests that failed in
# s6-call2 (fixed test; lion-pytorch now on the path); configs/default.yaml once under cProfile
# (where the host's time goes: start-up, the first epoch, evaluation, the end); one evaluation
# pass of each side under torch.profiler (benchmarks/eval_throughput.py --profile).
source reports/bench/device-scripts/s5-common.sh s7-call1
mkdir -p /tmp/site
python3 -c "import zipfile,glob; [zipfile.ZipFile(w).extractall('/tmp/site') for w in glob.glob('.device/whl/*.whl')]"
export PYTHONPATH=$PWD/src:/tmp/site
timeout 150 python3 -m pytest -q -p no:cacheprovider tests/test_cudagraph.py tests/test_optim.py \
  tests/test_eval_graphs_cuda.py -k "not compiled" > $R/pytest.log 2>&1; mark pytest $?
T0=$(date +%s.%N)
timeout 120 python3 -m cProfile -o /tmp/default.prof -m minbert train --config configs/default.yaml --data-dir $DATA \
  --model.encoder=$ENC --run-dir /tmp/prof-default --no-progress > $R/cprofile-default.log 2>&1; mark cprofile $?
echo "command wall $(python3 -c "import time; print(round(time.time() - $T0, 2))") s" >> $R/cprofile-default.log
cp /tmp/prof-default/summary.json $R/cprofile-default-summary.json 2>/dev/null
python3 -c "
import pstats, sys
s = pstats.Stats('/tmp/default.prof', stream=sys.stdout)
s.sort_stats('cumulative').print_stats(90)
s.sort_stats('tottime').print_stats(40)" > $R/cprofile-default.txt 2>&1
timeout $(( $(left) - 5 )) python3 benchmarks/eval_throughput.py --data-dir $DATA --encoder $ENC \
  --config configs/default.yaml --profile --out $R/eval_throughput.json > $R/eval_throughput.log 2>&1; mark eval $?
