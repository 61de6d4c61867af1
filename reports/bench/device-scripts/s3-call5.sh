#!/bin/bash
# s3-call5 (1 GPU): the CUDA tests after the flat gradient buffer change
export PYTHONUNBUFFERED=1 MINBERT_TEST_TOKENIZER_DIR=$PWD/.device/all-MiniLM-L6-v2-fp16 MINBERT_DATA_DIR=$PWD/.device/data
export PYTHONPATH=$PWD/src
mkdir -p $OUT
timeout 100 python3 -m pytest -q -p no:cacheprovider -k "not compiled" tests/test_cudagraph.py tests/test_train.py::test_pcgrad_on_cuda_with_a_parameter_no_task_reaches -rs > $OUT/pytest_cuda_s3.log 2>&1; echo "pytest rc=$?" >> $OUT/pytest_cuda_s3.log
tail -5 $OUT/pytest_cuda_s3.log
