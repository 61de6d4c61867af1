#!/bin/bash
# call 3 (2 GPUs): CUDA tests; the final row x 3 seeds + ensemble; the paper suite's remaining rows; ablation side rows
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1 PYTHONUNBUFFERED=1
export MINBERT_TEST_TOKENIZER_DIR=$PWD/.device/all-MiniLM-L6-v2-fp16 MINBERT_DATA_DIR=$PWD/.device/data
ENC=.device/all-MiniLM-L6-v2-fp16
START=$(date +%s); DEADLINE=$((START + ${BUDGET:-490}))
left() { echo $((DEADLINE - $(date +%s))); }
mark() { echo "$1 rc=$2 at $(($(date +%s)-START))s" >> $OUT/logs/timeline.txt; }
mkdir -p $OUT/logs /tmp/site ../shared/data /tmp/abruns
cp -r .device/data ../shared/data/cs224n; cp -r .device/sst-trees ../shared/data/sst-trees
cp -r .device/abruns/* /tmp/abruns/
python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl
export PYTHONPATH=$PWD/src:/tmp/site
AB="minbert ablate configs/beyond/ablation.yaml --runs-root /tmp/abruns --report-dir /tmp/abrep --no-progress --model.encoder=$ENC"
SU="minbert suite configs/paper/ --runs-root /tmp/paper --no-progress --train.epochs=3 --model.encoder=$ENC"
(
  export CUDA_VISIBLE_DEVICES=0
  timeout 40 python3 -m pytest -q -p no:cacheprovider -k "not compiled" tests/test_cudagraph.py > $OUT/logs/pytest_cuda.log 2>&1; mark pytest $?
  timeout 130 python3 -m $AB --final --seeds 0,1 > $OUT/logs/final01.log 2>&1; mark final01 $?
  timeout 160 python3 -m $SU --report-dir /tmp/prA --only 2,4,8 > $OUT/logs/suiteA.log 2>&1; mark suiteA $?
  timeout $(left) python3 -m $AB --only smart,sampled-sqrt,average > $OUT/logs/ab_gpu0.log 2>&1; mark ab_gpu0 $?
) &
(
  export CUDA_VISIBLE_DEVICES=1
  timeout 70 python3 -m $AB --final --seeds 2 > $OUT/logs/final2.log 2>&1; mark final2 $?
  timeout 200 python3 -m $SU --report-dir /tmp/prB --only 7,14,10,13 --rerun > $OUT/logs/suiteB.log 2>&1; mark suiteB $?
  timeout 100 python3 -m $SU --report-dir /tmp/prC --only 5,9,11,12 > $OUT/logs/suiteC.log 2>&1; mark suiteC $?
  timeout $(left) python3 -m $AB --only rdrop,uncertainty,llrd > $OUT/logs/ab_gpu1.log 2>&1; mark ab_gpu1 $?
) &
sleep 175
(CUDA_VISIBLE_DEVICES=1 timeout 60 python3 -m minbert ensemble /tmp/abruns/final-seed0 /tmp/abruns/final-seed1 /tmp/abruns/final-seed2 --out /tmp/abrep/ensemble > $OUT/logs/ensemble.log 2>&1; mark ensemble $?) &
wait
timeout 30 python3 -m $AB --only exp07 > $OUT/logs/ab_report.log 2>&1; mark ab_report $?
python3 -c "import json;p='reports/paper_suite.json';d=[r for r in json.load(open(p)) if r['exp']!=7];json.dump(d,open(p,'w'))"
CUDA_VISIBLE_DEVICES=0 timeout 25 python3 -m $SU --report-dir reports > $OUT/logs/suite_final.log 2>&1; mark suite_final $?
cp reports/paper_suite.* /tmp/abrep/ 2>/dev/null
cat $OUT/logs/timeline.txt
cd /tmp && tar czf $OUT/runs.tgz --exclude='*.safetensors' --exclude='*.pt' --exclude='tensorboard' --exclude='qqp-dev.csv' abruns abrep prA prB prC paper 2>/dev/null
cd - >/dev/null; tar czf $OUT/logs.tgz -C $OUT logs; rm -rf $OUT/logs; ls -la $OUT
