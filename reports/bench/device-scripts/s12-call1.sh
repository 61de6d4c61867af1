#!/bin/bash
# s12-call1 (1 GPU): where a default run's time goes now. The trainer's step under torch.profiler
# (benchmarks/profile_train.py: kernels per step, device and host busy fractions, top host ops);
# one default run under s12-call1-timing.py with an empty Triton cache and a normal exit, one with a
# filled cache ending through os._exit (the teardown's cost); import times of the plot stack.
source reports/bench/device-scripts/s5-common.sh s12-call1
rm -f $R/*
prime
{ echo "import matplotlib.pyplot:"; time python3 -c "import matplotlib; matplotlib.use('Agg'); import matplotlib.pyplot";
  echo "import scipy.stats:"; time python3 -c "import scipy.stats";
  echo "import torch:"; time python3 -c "import torch"; } >> $R/env.txt 2>&1
timeout 200 python3 benchmarks/profile_train.py --config configs/default.yaml --data-dir $DATA --variant shipped= \
  --warmup 150 --timed 100 --steps 20 --top 20 --out $R/profile-train-default.json -- --model.encoder=$ENC \
  > $R/profile-train-default.log 2>&1
mark profile $?
timing() {  # timing NAME EXTRA_ENV...
  local name=$1; shift
  local t0=$EPOCHREALTIME
  env "$@" timeout 120 python3 reports/bench/device-scripts/s12-call1-timing.py train --config configs/default.yaml \
    --run-dir /tmp/timing-$name --overwrite --no-progress --data-dir $DATA --model.encoder=$ENC > $R/timing-$name.log 2>&1
  mark timing-$name $?
  awk "BEGIN{print \"[t] process total\", $EPOCHREALTIME - $t0}" >> $R/timing-$name.log
  cp /tmp/timing-$name/summary.json $R/timing-$name-summary.json
}
timing cold TRITON_CACHE_DIR=/tmp/triton-timing
timing fastexit TRITON_CACHE_DIR=/tmp/triton-timing S12_FAST_EXIT=1
grep -h "^\[t\]\|^\[sum\]" $R/timing-*.log
