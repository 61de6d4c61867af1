"""`minbert train ARGS...` in this process with time stamps (seconds since this script started)
on stderr: the phases of Trainer (setup, train_epochs, finish), and the summed time and call
count of the per-epoch work (dev evaluation, host snapshots, checkpoint submits, the background
writer's writes, the wait for the compile children). After the CLI's main returns: gc, and a
device sync. With S12_FAST_EXIT=1 the process then ends through os._exit(0), so that the shell's
total against a normal exit gives the cost of the interpreter's teardown. (The version s12-call1
ran, for git f339081's code.)"""

import os
import runpy
import sys
import time

from timing_common import print_sums, stamp, timed

stamp("script start")
import minbert.training.evaluation as ev  # noqa: E402
import minbert.training.trainer as tr  # noqa: E402

stamp("trainer imported")
for name in ("setup_model", "load_splits", "start_kernel_compile", "wait_kernel_compile", "write_run_predictions",
             "write_run_plots", "write_model_card", "check_file_weights"):
    timed(tr, name)
for name in ("setup", "train_epochs", "finish"):
    timed(tr.Trainer, name)
timed(tr.Trainer, "save_checkpoint", "Trainer.save_checkpoint", False)
timed(tr.Trainer, "epoch_end", "Trainer.epoch_end", False)
timed(tr.Trainer, "_end_epoch_training", "Trainer._end_epoch_training", False)
timed(ev.DevEvaluator, "evaluate", "DevEvaluator.evaluate", False)
timed(tr, "host_snapshot", "host_snapshot (trainer)", False)
timed(ev, "host_snapshot", "host_snapshot (evaluation)", False)
timed(tr, "write_checkpoint", "writer thread: save_checkpoint", False)
timed(ev, "save_best_weights", "writer thread: save_best_weights", False)
timed(tr.BackgroundWriter, "submit", "BackgroundWriter.submit", False)
timed(tr.BackgroundWriter, "wait", "BackgroundWriter.wait", False)
timed(tr.MetricsLog, "end", "MetricsLog.end", True)
sys.argv = ["minbert", *sys.argv[1:]]
try:
    runpy.run_module("minbert", run_name="__main__")
except SystemExit:
    pass
stamp("main returned")
print_sums()
import gc  # noqa: E402

t = time.time()
gc.collect()
stamp(f"gc.collect took {time.time() - t:.3f} s")
import torch  # noqa: E402

t = time.time()
torch.cuda.synchronize()
stamp(f"cuda sync took {time.time() - t:.3f} s")
if os.environ.get("S12_FAST_EXIT") == "1":
    sys.stderr.flush()
    os._exit(0)
