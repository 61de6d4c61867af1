#!/bin/bash
# s3-call4 (2 GPUs): the 2-GPU CUDA-graph test; 1 vs 2 GPUs with CUDA graphs + flat all-reduce
# (bert-base-sized throughput, 400 steps; minilm full default preset with dev)
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1 PYTHONUNBUFFERED=1
export MINBERT_TEST_TOKENIZER_DIR=$PWD/.device/all-MiniLM-L6-v2-fp16 MINBERT_DATA_DIR=$PWD/.device/data
ENC=.device/all-MiniLM-L6-v2-fp16
START=$(date +%s); DEADLINE=$((START + ${BUDGET:-300}))
left() { echo $((DEADLINE - $(date +%s))); }
mark() { echo "$1 rc=$2 at $(($(date +%s)-START))s" >> $OUT/logs/timeline.txt; }
mkdir -p $OUT/logs /tmp/dist ../shared/data
cp -r .device/data ../shared/data/cs224n
export PYTHONPATH=$PWD/src
nvidia-smi topo -m > $OUT/logs/topo.txt 2>&1
python3 benchmarks/random_encoder.py /tmp/bert-base-random --like bert-base --tokenizer-from $ENC > $OUT/logs/random.log 2>&1
COMMON="--no-progress --overwrite --output.test_predictions=false --output.tensorboard=false --output.plot=false"
BB="--model.encoder=/tmp/bert-base-random --train.max_steps=400 --train.epochs=2"
T="python3 -m torch.distributed.run --standalone --nproc-per-node 2 -m minbert train --config configs/default.yaml $COMMON"
S="python3 -m minbert train --config configs/default.yaml $COMMON"
timeout 70 $T --run-dir /tmp/dist/bert-2gpu-graphs $BB > $OUT/logs/bert_2gpu_graphs.log 2>&1; mark bert_2_graphs $?
CUDA_VISIBLE_DEVICES=0 timeout 60 $S --run-dir /tmp/dist/bert-1gpu-graphs $BB > $OUT/logs/bert_1gpu_graphs.log 2>&1; mark bert_1_graphs $?
timeout 100 $T --run-dir /tmp/dist/minilm-2gpu-graphs --model.encoder=$ENC > $OUT/logs/minilm_2gpu_graphs.log 2>&1; mark minilm_2_graphs $?
timeout 45 python3 -m pytest -q -x -p no:cacheprovider tests/test_distributed.py::test_two_gpus_with_cuda_graphs_equal_one_gpu_double_batch > $OUT/logs/pytest_2gpu.log 2>&1; mark pytest_2gpu $?
cat $OUT/logs/timeline.txt
cd /tmp && tar czf $OUT/runs.tgz --exclude='*.safetensors' --exclude='*.pt' --exclude='tensorboard' --exclude='predictions' --exclude='checkpoints' --exclude='encoder' dist 2>/dev/null
cd - >/dev/null; tar czf $OUT/logs.tgz -C $OUT logs; rm -rf $OUT/logs; ls -la $OUT
