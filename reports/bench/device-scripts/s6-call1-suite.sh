#!/bin/bash
# s6-call1 (1 GPU): the reference paper's 14 rows at their presets' own 10 epochs, as four
# `minbert suite` processes side by side on the one GPU (each row is a small, latency-bound model,
# so the GPU has room for several). Row 14 starts from row 7's run, so they share a process. Each
# process writes its own paper_suite.json; their records are merged into one JSON afterwards and `minbert suite --report-dir` redraws the report.
source reports/bench/device-scripts/s5-common.sh s6-call1
mkdir -p /tmp/site ../shared/data && cp -r .device/data ../shared/data/cs224n && cp -r .device/sst-trees ../shared/data/sst-trees
python3 -c "import zipfile,glob; [zipfile.ZipFile(w).extractall('/tmp/site') for w in glob.glob('.device/whl/*.whl')]"
export PYTHONPATH=$PWD/src:/tmp/site
nvidia-smi --query-gpu=name,memory.used --format=csv > $R/gpu.txt
SU="minbert suite configs/paper/ --no-progress --model.encoder=$ENC"
for g in A:7,14,1,3,12 B:2,4 C:8,10,6 D:13,5,9,11; do
  name=${g%%:*}; rows=${g#*:}
  ( timeout $(( $(left) - 10 )) python3 -m $SU --runs-root /tmp/paper$name --report-dir $R/suite$name --only $rows \
      > $R/suite$name.log 2>&1; mark suite$name $? ) &
done
wait
for d in /tmp/paper?/*/; do n=$(basename $(dirname $d))-$(basename $d); cp $d/summary.json $R/summary-$n.json 2>/dev/null; done
