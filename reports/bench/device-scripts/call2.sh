#!/bin/bash
# call 2 (2 GPUs): CUDA tests; DDP 1 vs 2 GPUs (minilm full preset + bert-base-sized throughput); ablation rows
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1 PYTHONUNBUFFERED=1 MINBERT_TEST_TOKENIZER_DIR=$PWD/.device/all-MiniLM-L6-v2-fp16 MINBERT_DATA_DIR=$PWD/.device/data
ENC=.device/all-MiniLM-L6-v2-fp16
START=$(date +%s); DEADLINE=$((START + ${BUDGET:-565}))
left() { echo $((DEADLINE - $(date +%s))); }
mark() { echo "$1 rc=$2 at $(($(date +%s)-START))s" >> $OUT/logs/timeline.txt; }
mkdir -p $OUT/logs /tmp/site /tmp/dist ../shared/data
cp -r .device/data ../shared/data/cs224n; cp -r .device/sst-trees ../shared/data/sst-trees
python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl
export PYTHONPATH=$PWD/src:/tmp/site
python3 benchmarks/random_encoder.py /tmp/bert-base-random --like bert-base --tokenizer-from $ENC > $OUT/logs/random.log 2>&1
COMMON="--no-progress --overwrite --output.test_predictions=false --output.tensorboard=false"
BB="--model.encoder=/tmp/bert-base-random --train.max_steps=300 --train.epochs=1"
AB="minbert ablate configs/beyond/ablation.yaml --runs-root /tmp/abruns --report-dir /tmp/abrep --no-progress --model.encoder=$ENC"
(CUDA_VISIBLE_DEVICES=0 timeout 60 python3 -m pytest -q -x -p no:cacheprovider tests/test_cudagraph.py > $OUT/logs/pytest_cuda.log 2>&1; mark pytest $?) &
(CUDA_VISIBLE_DEVICES=1 timeout 60 python3 -m $AB --only exp07 > $OUT/logs/ab_exp07_pre.log 2>&1; mark ab_pre $?) &
wait
T="python3 -m torch.distributed.run --standalone --nproc-per-node 2 -m minbert train --config configs/default.yaml $COMMON"
timeout 150 $T --run-dir /tmp/dist/minilm-2gpu --model.encoder=$ENC > $OUT/logs/ddp_minilm.log 2>&1; mark ddp_minilm $?
timeout 90 $T --run-dir /tmp/dist/bert-2gpu $BB > $OUT/logs/ddp_bert.log 2>&1; mark ddp_bert $?
S="python3 -m minbert train --config configs/default.yaml $COMMON"
(
  export CUDA_VISIBLE_DEVICES=0
  timeout 60 $S --run-dir /tmp/dist/minilm-1gpu-eager --model.encoder=$ENC --train.cuda_graphs=off --train.max_steps=846 > $OUT/logs/minilm_1gpu_eager.log 2>&1; mark minilm_1_eager $?
  timeout 120 $S --run-dir /tmp/dist/minilm-1gpu-graphs --model.encoder=$ENC > $OUT/logs/minilm_1gpu_graphs.log 2>&1; mark minilm_1_graphs $?
  timeout 90 $S --run-dir /tmp/dist/bert-1gpu-eager $BB --train.cuda_graphs=off > $OUT/logs/bert_1gpu_eager.log 2>&1; mark bert_1_eager $?
  timeout 90 $S --run-dir /tmp/dist/bert-1gpu-graphs $BB > $OUT/logs/bert_1gpu_graphs.log 2>&1; mark bert_1_graphs $?
  timeout $(left) python3 -m $AB --only sbert-features,uncertainty,rdrop,sampled-sqrt > $OUT/logs/ab_gpu0.log 2>&1; mark ab_gpu0 $?
) &
(
  export CUDA_VISIBLE_DEVICES=1
  timeout $(left) python3 -m $AB --only exp07,recipe,cross,cross-mean,phrases,swap,llrd,average > $OUT/logs/ab_gpu1.log 2>&1; mark ab_gpu1 $?
) &
wait
cat $OUT/logs/timeline.txt
cd /tmp && tar czf $OUT/runs.tgz --exclude='*.safetensors' --exclude='*.pt' --exclude='tensorboard' --exclude='predictions' dist abruns abrep 2>/dev/null
cd - >/dev/null; tar czf $OUT/logs.tgz -C $OUT logs; rm -rf $OUT/logs
ls -la $OUT
