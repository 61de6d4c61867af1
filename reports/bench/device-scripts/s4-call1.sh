#!/bin/bash
# s4-call1 (1 GPU): ablation rows export-heads and export-heads-seed1 (configs/beyond/ablation.yaml),
# two processes sharing the GPU, then the report merged with the committed reports/beyond.json
export PYTHONUNBUFFERED=1 MINBERT_DATA_DIR=$PWD/.device/data
ENC=.device/all-MiniLM-L6-v2-fp16
START=$(date +%s); DEADLINE=$((START + ${BUDGET:-420}))
left() { echo $((DEADLINE - $(date +%s))); }
mark() { echo "$1 rc=$2 at $(($(date +%s)-START))s" >> $OUT/logs/timeline.txt; }
mkdir -p $OUT/logs ../shared/data /tmp/abruns /tmp/abrep
cp -r .device/data ../shared/data/cs224n; cp -r .device/sst-trees ../shared/data/sst-trees
cp reports/beyond.json reports/beyond_notes.md /tmp/abrep/
export PYTHONPATH=$PWD/src
nvidia-smi > $OUT/logs/nvidia-smi.txt 2>&1
AB="minbert ablate configs/beyond/ablation.yaml --runs-root /tmp/abruns --report-dir /tmp/abrep --no-progress --model.encoder=$ENC"
for row in export-heads export-heads-seed1; do
  (timeout $(( $(left) - 30 )) python3 -m $AB --only $row --report-dir /tmp/rep-$row > $OUT/logs/$row.log 2>&1; mark $row $?) &
  sleep 2
done
wait
timeout 60 python3 -m $AB --report-only > $OUT/logs/ab_report.log 2>&1; mark ab_report $?
cat $OUT/logs/timeline.txt
cd /tmp && tar czf $OUT/runs.tgz --exclude='*.safetensors' --exclude='*.pt' --exclude='tensorboard' --exclude='checkpoints' --exclude='encoder' abruns/export-heads abruns/export-heads-seed1 abrep 2>/dev/null
cd - >/dev/null; tar czf $OUT/logs.tgz -C $OUT logs; ls -la $OUT
