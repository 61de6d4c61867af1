#!/bin/bash
# s6-call2 (1 GPU): first, side by side, the CUDA tests of the new paths (graphed dev
# evaluation, direct gradients, fused AdamW) and the paper suite's last three rows at 10 epochs
# (4, 11, 12: one process each; s6-call1 ran out of time on them). Then, alone on the GPU:
# configs/default.yaml and configs/best.yaml end to end as shipped, 2 seeds each (the presets do not
# compile: cold = warm), and evaluation throughput against compiled transformers.
source reports/bench/device-scripts/s5-common.sh s6-call2
export TORCHINDUCTOR_CACHE_DIR=/tmp/inductor-cold
mkdir -p /tmp/site ../shared/data && cp -r .device/data ../shared/data/cs224n && cp -r .device/sst-trees ../shared/data/sst-trees
python3 -c "import zipfile,glob; [zipfile.ZipFile(w).extractall('/tmp/site') for w in glob.glob('.device/whl/*.whl')]"
SU="minbert suite configs/paper/ --no-progress --model.encoder=$ENC"
for row in 4 11 12; do
  ( PYTHONPATH=$PWD/src:/tmp/site timeout 290 python3 -m $SU --runs-root /tmp/paper$row --report-dir $R/suite$row \
      --only $row > $R/suite$row.log 2>&1; mark suite$row $? ) &
done
timeout 200 python3 -m pytest -q -p no:cacheprovider tests/test_eval_graphs_cuda.py tests/test_cudagraph.py \
  tests/test_packing_cuda.py tests/test_optim.py -k "not compiled" > $R/pytest.log 2>&1; mark pytest $?
wait
e2e main default
[ $(left) -gt 150 ] && e2e main best --tasks.sst.phrases_file=$PWD/.device/sst-trees/train.txt
[ $(left) -gt 70 ] && eval_tp
