#!/bin/bash
# s3-call2 (1 or 2 GPUs): optuna workers (3 per GPU) on the sampled-sqrt row; the PCGrad row
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1 PYTHONUNBUFFERED=1
export MINBERT_TEST_TOKENIZER_DIR=$PWD/.device/all-MiniLM-L6-v2-fp16 MINBERT_DATA_DIR=$PWD/.device/data
ENC=.device/all-MiniLM-L6-v2-fp16
START=$(date +%s); DEADLINE=$((START + ${BUDGET:-480}))
left() { echo $((DEADLINE - $(date +%s))); }
mark() { echo "$1 rc=$2 at $(($(date +%s)-START))s" >> $OUT/logs/timeline.txt; }
mkdir -p $OUT/logs /tmp/site ../shared/data /tmp/tune /tmp/abruns
cp -r .device/data ../shared/data/cs224n; cp -r .device/sst-trees ../shared/data/sst-trees
cp -r .device/abruns/* /tmp/abruns/
python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl
export PYTHONPATH=$PWD/src:/tmp/site
python3 -c "import optuna; print(optuna.__version__)" >> $OUT/logs/timeline.txt 2>&1
NGPU=$(nvidia-smi -L | wc -l); echo "gpus $NGPU" >> $OUT/logs/timeline.txt
AB="minbert ablate configs/beyond/ablation.yaml --runs-root /tmp/abruns --report-dir /tmp/abrep --no-progress --model.encoder=$ENC"
(CUDA_VISIBLE_DEVICES=0 timeout 60 python3 -m pytest -q -p no:cacheprovider -k "cuda" tests/test_train.py > $OUT/logs/pytest_cuda.log 2>&1; mark pytest $?
 CUDA_VISIBLE_DEVICES=0 timeout $(( $(left) - 10 )) python3 -m $AB --only pcgrad > $OUT/logs/ab_pcgrad.log 2>&1; mark ab_pcgrad $?) &
W=0
for g in $(seq 0 $((NGPU - 1))); do
  for k in 0 1 2; do
    (CUDA_VISIBLE_DEVICES=$g timeout $(( $(left) - 5 )) python3 -m minbert tune --config .device/tune-base.yaml --study-dir /tmp/tune --trials 60 --seed $((W + 2)) --timeout $(( $(left) - 170 )) > $OUT/logs/tune_w$W.log 2>&1; mark tune$W $?) &
    W=$((W + 1)); sleep 4
  done
done
wait
timeout 20 python3 -m $AB --only exp07 > $OUT/logs/ab_report.log 2>&1; mark ab_report $?
cat $OUT/logs/timeline.txt
cd /tmp && tar czf $OUT/runs.tgz --exclude='*.safetensors' --exclude='*.pt' --exclude='tensorboard' --exclude='predictions' --exclude='checkpoints' --exclude='encoder' tune abruns/pcgrad abrep 2>/dev/null
cd - >/dev/null; tar czf $OUT/logs.tgz -C $OUT logs; rm -rf $OUT/logs; ls -la $OUT
