#!/bin/bash
# s5-call4 (1 GPU): the trainer's own steps profiled on configs/default.yaml
# (benchmarks/profile_train.py): as shipped (packed, one graph per step), with the fused torch
# AdamW, and padded (model.packing=off); then configs/default.yaml end to end, 2 seeds, if time is left.
source reports/bench/device-scripts/s5-common.sh s5-call4
timeout $(( $(left) - 5 )) python3 benchmarks/profile_train.py --config configs/default.yaml --data-dir $DATA \
  --variant shipped= --variant torch_adamw=optim.name=torch_adamw --variant padded=model.packing=off \
  --out $R/profile-train-default.json -- --model.encoder=$ENC > $R/profile-train-default.log 2>&1
mark profile-train $?
[ $(left) -gt 120 ] && e2e main default
