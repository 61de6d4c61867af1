"""`minbert train ARGS...` in this process with time stamps (seconds since this script started)
on stderr: the phases of Trainer (setup, train_epochs, finish), and the summed time and call
count of the per-epoch work (dev evaluation, host snapshots, checkpoint submits, the background
writer's writes, the wait for the compile children). After the CLI's main returns, the process
ends through os._exit (as the minbert command does), unless S12_FAST_EXIT=0: then the interpreter
tears down as usual. The trainer is imported before main runs (to time its parts),
so the CLI's early start of the compile children does not overlap that import here."""

import os
import sys

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
timed(tr.BackgroundWriter, "snapshot", "BackgroundWriter.snapshot", False)
timed(tr, "write_checkpoint", "writer thread: save_checkpoint", False)
timed(ev, "host_snapshot", "host_snapshot (evaluation, without the writer's buffers)", False)
timed(ev, "save_best_weights", "writer thread: save_best_weights", False)
timed(tr.BackgroundWriter, "submit", "BackgroundWriter.submit", False)
timed(tr.BackgroundWriter, "wait", "BackgroundWriter.wait", False)
timed(tr.MetricsLog, "end", "MetricsLog.end", True)
from minbert.cli import main  # noqa: E402

code = main(sys.argv[1:])
stamp("main returned")
print_sums()
if os.environ.get("S12_FAST_EXIT", "1") == "1":  # as minbert.cli.entry ends the process
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
