#!/bin/bash
# s3-call6 (1 GPU): four more side rows of the ablation, sharing the GPU
export PYTHONUNBUFFERED=1 MINBERT_DATA_DIR=$PWD/.device/data
ENC=.device/all-MiniLM-L6-v2-fp16
START=$(date +%s)
mark() { echo "$1 rc=$2 at $(($(date +%s)-START))s" >> $OUT/logs/timeline.txt; }
mkdir -p $OUT/logs ../shared/data /tmp/abruns
cp -r .device/data ../shared/data/cs224n; cp -r .device/sst-trees ../shared/data/sst-trees
export PYTHONPATH=$PWD/src
AB="minbert ablate configs/beyond/ablation.yaml --runs-root /tmp/abruns --report-dir /tmp/abrep --no-progress --model.encoder=$ENC"
for r in sampled-proportional sampled-round-robin head-lr sst-weight; do
  (timeout ${BUDGET:-200} python3 -m $AB --only $r > $OUT/logs/ab_$r.log 2>&1; mark $r $?) &
  sleep 2
done
wait
cat $OUT/logs/timeline.txt
cd /tmp && tar czf $OUT/runs.tgz --exclude='*.safetensors' --exclude='*.pt' --exclude='tensorboard' --exclude='checkpoints' --exclude='encoder' --exclude='predictions' abruns 2>/dev/null
cd - >/dev/null; tar czf $OUT/logs.tgz -C $OUT logs; rm -rf $OUT/logs; ls -la $OUT
