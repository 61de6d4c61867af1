"""`minbert train ARGS...` in this process with time stamps (seconds since this script started)
on stderr: the phases of Trainer (setup, train_epochs, finish), the kernel-compile children,
setup_model, load_splits, the final predictions, plots and model card, the trackers' end, and
the return of the CLI's main. The shell that runs it adds the process's total wall time, so the
interpreter's exit is the difference."""

import runpy
import sys

from timing_common import stamp, timed

stamp("script start")
import minbert.training.trainer as tr  # noqa: E402

stamp("trainer imported")
for name in ("setup_model", "load_splits", "start_kernel_compile", "wait_kernel_compile", "write_run_predictions",
             "write_run_plots", "write_model_card", "check_file_weights", "log_run_end"):
    timed(tr, name)
for name in ("setup", "train_epochs", "finish"):
    timed(tr.Trainer, name)
timed(tr.MetricsLog, "end")
sys.argv = ["minbert", *sys.argv[1:]]
try:
    runpy.run_module("minbert", run_name="__main__")
except SystemExit:
    pass
stamp("main returned")
