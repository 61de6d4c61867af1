#!/bin/bash
# s9-call5 (1 GPU, on s9-call4's machine while still held): the dropout-mask check that s9-call4
# skipped (its command lacked the two arguments the script then required, unused by the check):
# does each varlen kernel's backward drop the attention probabilities its forward dropped?
export PYTHONPATH=$PWD/src; mkdir -p $OUT; timeout 35 python3 benchmarks/attention_varlen.py --data-dir x --encoder x --mask-check --out $OUT/s9-call5-mask-check.json 2>&1 | tail -40
