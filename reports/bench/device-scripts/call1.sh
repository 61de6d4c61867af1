#!/bin/bash
# call 1 (2 GPUs): GPU0 = CUDA tests, e2e after (2 seeds), train-step benchmark; GPU1 = e2e before (seed 1), paper suite rows
export PYTHONUNBUFFERED=1 MINBERT_DATA_DIR=.device/data
ENC=.device/all-MiniLM-L6-v2-fp16; D=.device/data
START=$(date +%s); DEADLINE=$((START + ${BUDGET:-560}))
left() { echo $((DEADLINE - $(date +%s))); }
mkdir -p $OUT/logs /tmp/site
python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl
export PYTHONPATH=src:/tmp/site
nvidia-smi > $OUT/logs/nvidia-smi.txt 2>&1
(
  export CUDA_VISIBLE_DEVICES=0
  timeout 100 python3 -m pytest -q -x -p no:cacheprovider tests/test_cudagraph.py > $OUT/logs/pytest_cuda.log 2>&1
  echo "pytest rc=$? at $(($(date +%s)-START))s" >> $OUT/logs/timeline.txt
  timeout 260 python3 benchmarks/e2e.py --preset configs/default.yaml --seeds 0,1 --run after=src --keep /tmp/e2e --out $OUT/e2e_after.json -- --data-dir $D --model.encoder=$ENC > $OUT/logs/e2e_after.log 2>&1
  echo "e2e after rc=$? at $(($(date +%s)-START))s" >> $OUT/logs/timeline.txt
  timeout $(left) python3 benchmarks/train_step.py --data-dir $D --encoder $ENC --configs minilm-l6,bert-base --batches 32,8,128 --out $OUT/train_step.json > $OUT/logs/train_step.log 2>&1
  echo "train_step rc=$? at $(($(date +%s)-START))s" >> $OUT/logs/timeline.txt
) &
(
  export CUDA_VISIBLE_DEVICES=1
  timeout 380 python3 benchmarks/e2e.py --preset configs/default.yaml --seeds 1 --run before=.device/before/src --keep /tmp/e2eb --out $OUT/e2e_before.json -- --data-dir $D --model.encoder=$ENC > $OUT/logs/e2e_before.log 2>&1
  echo "e2e before rc=$? at $(($(date +%s)-START))s" >> $OUT/logs/timeline.txt
  timeout $(left) python3 -m minbert suite configs/paper/ --data-dir $D --runs-root /tmp/paper --report-dir /tmp/paper-report --only ${ROWS:-1,3,6,7} --no-progress --train.epochs=${EPOCHS:-3} --model.encoder=$ENC > $OUT/logs/suite.log 2>&1
  echo "suite rc=$? at $(($(date +%s)-START))s" >> $OUT/logs/timeline.txt
) &
wait
cp /tmp/e2e/*.log /tmp/e2eb/*.log $OUT/logs/ 2>/dev/null
cd /tmp && tar czf $OUT/runs.tgz --exclude='*.safetensors' --exclude='*.pt' --exclude='tensorboard' e2e e2eb paper paper-report 2>/dev/null
cd - >/dev/null; tar czf $OUT/logs.tgz -C $OUT logs
ls -la $OUT; cat $OUT/logs/timeline.txt
