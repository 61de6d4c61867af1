#!/bin/bash
# s3-call3 (1 GPU): the final row (rdrop) x 3 seeds + ensemble + test predictions; row rdrop-sampled
export PYTHONUNBUFFERED=1 MINBERT_TEST_TOKENIZER_DIR=$PWD/.device/all-MiniLM-L6-v2-fp16 MINBERT_DATA_DIR=$PWD/.device/data
ENC=.device/all-MiniLM-L6-v2-fp16
START=$(date +%s); DEADLINE=$((START + ${BUDGET:-450}))
left() { echo $((DEADLINE - $(date +%s))); }
mark() { echo "$1 rc=$2 at $(($(date +%s)-START))s" >> $OUT/logs/timeline.txt; }
mkdir -p $OUT/logs /tmp/site ../shared/data /tmp/abruns
cp -r .device/data ../shared/data/cs224n; cp -r .device/sst-trees ../shared/data/sst-trees
cp -r .device/abruns/* /tmp/abruns/; rm -rf /tmp/abruns/final-seed*
python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl
export PYTHONPATH=$PWD/src:/tmp/site
AB="minbert ablate configs/beyond/ablation.yaml --runs-root /tmp/abruns --report-dir /tmp/abrep --no-progress --model.encoder=$ENC"
for s in 0 1 2; do
  (timeout $(( $(left) - 40 )) python3 -m $AB --final --seeds $s > $OUT/logs/final$s.log 2>&1; mark final$s $?) &
  sleep 3
done
(timeout $(( $(left) - 40 )) python3 -m $AB --only rdrop-sampled > $OUT/logs/ab_rdrop_sampled.log 2>&1; mark rdrop_sampled $?) &
wait
timeout 60 python3 -m minbert ensemble /tmp/abruns/final-seed0 /tmp/abruns/final-seed1 /tmp/abruns/final-seed2 --out /tmp/abrep/ensemble > $OUT/logs/ensemble.log 2>&1; mark ensemble $?
timeout 30 python3 -m $AB --only exp07 > $OUT/logs/ab_report.log 2>&1; mark ab_report $?
cat $OUT/logs/timeline.txt
cd /tmp && tar czf $OUT/runs.tgz --exclude='*.safetensors' --exclude='*.pt' --exclude='tensorboard' --exclude='checkpoints' --exclude='encoder' abruns/final-seed0 abruns/final-seed1 abruns/final-seed2 abruns/rdrop-sampled abrep 2>/dev/null
cd - >/dev/null; tar czf $OUT/logs.tgz -C $OUT logs; rm -rf $OUT/logs; ls -la $OUT
