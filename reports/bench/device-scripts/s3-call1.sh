#!/bin/bash
# s3-call1 (2 GPUs): CUDA tests; remaining ablation rows (GPU 0); PCGrad row then an optuna worker (GPU 1)
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1 PYTHONUNBUFFERED=1
export MINBERT_TEST_TOKENIZER_DIR=$PWD/.device/all-MiniLM-L6-v2-fp16 MINBERT_DATA_DIR=$PWD/.device/data
ENC=.device/all-MiniLM-L6-v2-fp16
START=$(date +%s); DEADLINE=$((START + ${BUDGET:-500}))
left() { echo $((DEADLINE - $(date +%s))); }
mark() { echo "$1 rc=$2 at $(($(date +%s)-START))s" >> $OUT/logs/timeline.txt; }
mkdir -p $OUT/logs /tmp/site ../shared/data /tmp/abruns /tmp/tune
cp -r .device/data ../shared/data/cs224n; cp -r .device/sst-trees ../shared/data/sst-trees
cp -r .device/abruns/* /tmp/abruns/
python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl
python3 -c "import optuna" 2>/dev/null || echo "NO OPTUNA" >> $OUT/logs/timeline.txt
export PYTHONPATH=$PWD/src:/tmp/site
nvidia-smi > $OUT/logs/nvidia-smi.txt 2>&1
AB="minbert ablate configs/beyond/ablation.yaml --runs-root /tmp/abruns --report-dir /tmp/abrep --no-progress --model.encoder=$ENC"
(
  export CUDA_VISIBLE_DEVICES=0
  timeout $(left) python3 -m $AB --only rdrop-smart,llrd,sampled-annealed,sbert-features,rdrop-smart-sampled > $OUT/logs/ab_gpu0.log 2>&1; mark ab_gpu0 $?
) &
(
  export CUDA_VISIBLE_DEVICES=1
  timeout 45 python3 -m pytest -q -p no:cacheprovider -k "not compiled" tests/test_cudagraph.py > $OUT/logs/pytest_cuda.log 2>&1; mark pytest $?
  timeout 230 python3 -m $AB --only pcgrad > $OUT/logs/ab_gpu1.log 2>&1; mark ab_gpu1 $?
  timeout $(( $(left) - 5 )) python3 -m minbert tune --config .device/tune-base.yaml --study-dir /tmp/tune --trials 40 --seed 1 > $OUT/logs/tune1.log 2>&1; mark tune1 $?
) &
wait
timeout 20 python3 -m $AB --only exp07 > $OUT/logs/ab_report.log 2>&1; mark ab_report $?
cat $OUT/logs/timeline.txt
cd /tmp && tar czf $OUT/runs.tgz --exclude='*.safetensors' --exclude='*.pt' --exclude='tensorboard' --exclude='qqp-dev.csv' --exclude='checkpoints' --exclude='encoder' abruns abrep tune 2>/dev/null
cd - >/dev/null; tar czf $OUT/logs.tgz -C $OUT logs; rm -rf $OUT/logs; ls -la $OUT
