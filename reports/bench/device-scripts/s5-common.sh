#!/bin/bash
# The common start of the s5-call*.sh scripts (sourced): the environment, the result folder, the
# deadline and the timeline. $1: the call's name (its tarball in $OUT).
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD/src MINBERT_TEST_TOKENIZER_DIR=$PWD/.device/all-MiniLM-L6-v2-fp16
export MINBERT_DATA_DIR=$PWD/.device/data
ENC=$PWD/.device/all-MiniLM-L6-v2-fp16; DATA=$PWD/.device/data
R=/tmp/res; mkdir -p $R
START=$(date +%s); DEADLINE=$((START + ${BUDGET:-570}))
left() { echo $((DEADLINE - $(date +%s))); }
mark() { echo "$1 rc=$2 at $(($(date +%s)-START))s" >> $R/timeline.txt; }
finish() { cd $R && tar czf $OUT/$CALL.tar.gz . ; cat $R/timeline.txt; tail -1 $R/pytest.log 2>/dev/null; grep -h '"wall_s"' $R/e2e-*.log 2>/dev/null | cut -c1-220; }
CALL=$1
trap finish EXIT
# e2e RUN PRESET ARGS...: benchmarks/e2e.py on configs/PRESET.yaml, seeds 0 and 1, as run RUN;
# keeps its JSON, log, both summary.json files and seed 0's train.log
e2e() {
  local run=$1 preset=$2; shift 2
  timeout $(( $(left) - 5 )) python3 benchmarks/e2e.py --preset configs/$preset.yaml --seeds 0,1 --run $run=src \
    --keep /tmp/e2e-$preset --out $R/e2e-$preset$SUFFIX.json -- --data-dir $DATA --model.encoder=$ENC "$@" \
    2> $R/e2e-$preset$SUFFIX.log >/dev/null
  mark e2e-$preset$SUFFIX $?
  for s in 0 1; do cp /tmp/e2e-$preset/$run-seed$s/summary.json $R/$preset$SUFFIX-seed$s-summary.json 2>/dev/null; done
  cp /tmp/e2e-$preset/$run-seed0/train.log $R/$preset$SUFFIX-seed0-train.log 2>/dev/null
}
# ab NAME SRC PRESET ARGS...: benchmarks/e2e.py on configs/PRESET.yaml, seeds 0 and 1 of the source
# tree SRC as run NAME, each run with an empty Triton cache; keeps e2e-PRESET-NAME.json and .log,
# both summary.json files and seed 0's train.log (a version against another in one call)
ab() {
  local name=$1 src=$2 preset=$3; shift 3
  [ $(left) -lt 60 ] && return
  timeout $(( $(left) - 5 )) python3 benchmarks/e2e.py --preset configs/$preset.yaml --seeds 0,1 --run $name=$src \
    --fresh-triton-cache --keep /tmp/e2e-$preset --out $R/e2e-$preset-$name.json \
    -- --data-dir $DATA --model.encoder=$ENC "$@" 2> $R/e2e-$preset-$name.log >/dev/null
  mark e2e-$preset-$name $?
  for s in 0 1; do cp /tmp/e2e-$preset/$name-seed$s/summary.json $R/$preset-$name-seed$s-summary.json 2>/dev/null; done
  cp /tmp/e2e-$preset/$name-seed0/train.log $R/$preset-$name-seed0-train.log 2>/dev/null
}
# eval_tp: benchmarks/eval_throughput.py with configs/default.yaml's heads
eval_tp() {
  timeout $(( $(left) - 5 )) python3 benchmarks/eval_throughput.py --data-dir $DATA --encoder $ENC \
    --config configs/default.yaml --out $R/eval_throughput.json > $R/eval_throughput.log 2>&1; mark eval $?
}
# prime: the data where the presets expect it; Python's bytecode and matplotlib's font cache
# written to /tmp and filled by importing what a run imports (this image sets
# PYTHONDONTWRITEBYTECODE=1 and ships torch without .pyc files); the import times go to env.txt
prime() {
  mkdir -p ../shared/data && cp -r .device/data ../shared/data/cs224n && cp -r .device/sst-trees ../shared/data/sst-trees
  unset PYTHONDONTWRITEBYTECODE
  export PYTHONPYCACHEPREFIX=/tmp/pyc MPLCONFIGDIR=/tmp/mpl
  TIMEFORMAT="%R s"
  { echo "first import (fills the caches):"; time python3 -c "import minbert.training.trainer, minbert.training.plots, \
minbert.training.task_plots, minbert.inference.model_card, minbert.cli, matplotlib.figure, matplotlib.font_manager, \
torch.utils.tensorboard, scipy.stats"; echo "second import of the trainer:"; time python3 -c "import minbert.training.trainer"; } > $R/env.txt 2>&1
  mark env $?
}
# ts CONFIG BATCH IMPLS: benchmarks/train_step.py for one config and batch (ts-CONFIG-bBATCH.json and .log)
ts() {
  [ $(left) -lt 60 ] && return
  timeout $(( $(left) - 5 )) python3 benchmarks/train_step.py --data-dir $DATA --encoder $ENC --configs $1 \
    --batches $2 --n-batches 32 --warmup 32 --impls $3 --out $R/ts-$1-b$2.json 2> $R/ts-$1-b$2.log >/dev/null
  mark ts-$1-$2 $?
}
# prof NAME BENCHMARKS_DIR: benchmarks/profile_train.py (of that tree) on configs/default.yaml
# (profile-train-default-NAME.json and .log; top $TOP kernels, 25 unless set)
prof() {
  timeout 150 python3 $2/profile_train.py --config configs/default.yaml --data-dir $DATA --variant shipped= \
    --warmup 150 --timed 200 --steps 20 --top ${TOP:-25} --out $R/profile-train-default-$1.json \
    -- --model.encoder=$ENC > $R/profile-train-default-$1.log 2>&1
  mark profile-$1 $?
}
# pstep IMPL: benchmarks/profile_step.py, bert-base at batch 32, one train-step implementation of
# benchmarks/train_step.py (profile-IMPL.json and .log; top 60 kernels)
pstep() {
  [ $(left) -lt 60 ] && return
  timeout $(( $(left) - 5 )) python3 benchmarks/profile_step.py --data-dir $DATA --encoder $ENC --config bert-base \
    --batch 32 --impl $1 --top 60 --out $R/profile-$1.json > /dev/null 2> $R/profile-$1.log
  mark profile-$1 $?
}
# tsx NAME TREE [MIN_LEFT] [LIMIT]: our compiled packed step only, bert-base at batch 32, from TREE's
# benchmarks/train_step.py (ts-NAME.json and .log); skipped with less than MIN_LEFT s left (70);
# at most LIMIT s (110; 0: what is left but 3 s)
tsx() {
  local min=${3:-70} limit=${4:-110}
  [ $(left) -lt $min ] && return
  [ $limit -eq 0 ] && limit=$(( $(left) - 3 ))
  timeout $limit python3 $2/benchmarks/train_step.py --data-dir $DATA --encoder $ENC --configs bert-base \
    --batches 32 --n-batches 32 --warmup 32 --impls minbert-packed-compile --out $R/ts-$1.json 2> $R/ts-$1.log > /dev/null
  mark ts-$1 $?
}
# gpu_pytest LIMIT FILES...: pytest -x of FILES with their output (-s), at most LIMIT s (pytest.log;
# its last lines printed)
gpu_pytest() {
  local limit=$1; shift
  timeout $limit python3 -m pytest -q -s -x -p no:cacheprovider "$@" > $R/pytest.log 2>&1; mark pytest $?
  tail -15 $R/pytest.log
}
