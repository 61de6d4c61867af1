"""The ``minbert`` command line.

    minbert train --config configs/quick.yaml [--data-dir DIR] [--run-dir DIR] [--optim.lr=2e-5 ...]
    minbert train --resume RUN_DIR [--data-dir DIR] [--allow-data-change]
    minbert evaluate RUN_DIR [--data-dir DIR] [--allow-data-change]
    minbert predict RUN_DIR --task sst --text "..."            (or --input FILE [--output FILE])
    minbert export RUN_DIR OUT                                 (Hugging Face BERT folder + heads)
    minbert serve RUN_DIR [--host 127.0.0.1] [--port 8000]     (HTTP API and demo page)
    minbert suite configs/paper/ [--data-dir DIR] [--runs-root DIR] [--only 1,7,14] [--train.epochs=3 ...]
    minbert tune --config configs/best.yaml --study-dir runs/tune [--trials 20]   (optuna, resumable)
    minbert ablate configs/beyond/ablation.yaml [--only a,b] [--final [--seeds 0,1,2]] [--report-only]
    minbert config show [--config F] [--optim.lr=2e-5 ...]   (the resolved config, every field explained)
    minbert config schema [--output FILE]                     (JSON Schema of a config file, for editors)

Every user mistake ends with a one-line ``error: ...`` on stderr and exit code 2. SIGINT or
SIGTERM during ``train`` writes a checkpoint, prints one line with the resume command and exits
130 or 143.
"""

from __future__ import annotations

import argparse
import errno
import json
import logging
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

from . import STARTED_AT, __version__
from .cli_inference import cmd_ensemble, cmd_evaluate, cmd_predict
from .errors import ConfigError, MinbertError, TrainingInterrupted, out_of_memory

if TYPE_CHECKING:
    from .runs import Run

log = logging.getLogger("minbert")


def _setup_logging(verbose: bool) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(message)s",
        datefmt="%H:%M:%S",
        stream=sys.stderr,
    )


def _split_overrides(extra: list[str]) -> list[str]:
    out = []
    for item in extra:
        if not item.startswith("--") or "=" not in item or "." not in item.split("=", 1)[0]:
            raise ConfigError(f"unrecognised argument {item!r} (config overrides look like --section.key=value)")
        out.append(item)
    return out


def cmd_train(args: argparse.Namespace, extra: list[str]) -> int:
    """Train a new run (``--config`` and overrides) or resume one (``--resume``); print the run
    folder and its dev scores as JSON."""
    from .config import load_config
    from .training.kernel_compile import start_early, stop_kernel_compile

    overrides = _split_overrides(extra) + (["--data.strict=true"] if args.strict else [])
    if args.allow_data_change and not args.resume:
        raise ConfigError("--allow-data-change goes with --resume (a new run records the data it is given)")
    if args.resume:
        if args.config or overrides:
            raise ConfigError("--resume continues a run with its saved config; do not pass --config or overrides")
        run = train_resume(args)
    else:
        cfg = load_config(args.config, overrides)
        compiling = start_early(cfg)  # before torch is imported: the children start while this process imports
        try:
            from .training.trainer import train

            run = train(cfg, run_dir=args.run_dir, data_dir=args.data_dir, overwrite=args.overwrite,
                        progress=not args.no_progress, t_start=STARTED_AT, compiling=compiling)
        finally:
            stop_kernel_compile(compiling)  # (none left where the run waited for them)
    if run.summary:  # under torchrun only rank 0 has the summary
        summary = run.summary
        print(json.dumps({"run_dir": str(run.run_dir), "dev": summary["dev"], "best_epoch": summary["best_epoch"]}))
    return 0


def cmd_tune(args: argparse.Namespace, extra: list[str]) -> int:
    """Run (or continue) an optuna study; print its result as JSON."""
    from .config import load_config
    from .experiments.tune import tune

    cfg = load_config(args.config, _split_overrides(extra))
    result = tune(
        cfg, args.study_dir, n_trials=args.trials, data_dir=args.data_dir, seed=args.seed, timeout=args.timeout
    )
    print(json.dumps(result))
    return 0


def cmd_ablate(args: argparse.Namespace, extra: list[str]) -> int:
    """Train an ablation chain and write its report; print the rows' dev scores as JSON."""
    from .experiments.ablation import run_ablation

    only = [x.strip() for x in args.only.split(",") if x.strip()] if args.only else None
    try:
        seeds = [int(x) for x in args.seeds.split(",")] if args.seeds else None
    except ValueError:
        raise ConfigError(f"--seeds {args.seeds!r}: expected integers separated by commas, e.g. 0,1,2") from None
    report = run_ablation(
        args.file, args.runs_root, args.report_dir, data_dir=args.data_dir, only=only, final=args.final,
        extra=_split_overrides(extra), progress=not args.no_progress, seeds=seeds, report_only=args.report_only,
    )
    print(json.dumps({"rows": {r["name"]: r["dev"] for r in report["rows"]}, "best": report["best"]}))
    return 0


def train_resume(args: argparse.Namespace) -> Run:
    """Continue the run in ``args.resume`` from its last checkpoint, with its saved config."""
    from .config import load_config
    from .runs import require_run_dir
    from .training.trainer import train

    run_dir = require_run_dir(args.resume)
    cfg = load_config(run_dir / "config.yaml")
    return train(cfg, run_dir=run_dir, data_dir=args.data_dir, resume=True, progress=not args.no_progress,
                 t_start=STARTED_AT, allow_data_change=args.allow_data_change)


def cmd_export(args: argparse.Namespace, extra: list[str]) -> int:
    """Write a run as a Hugging Face BERT folder plus the minbert heads (see minbert.export)."""
    from .inference.export import export_run

    if extra:
        raise ConfigError(f"unrecognised argument {extra[0]!r}")
    out = export_run(args.run_dir, args.out, overwrite=args.overwrite)
    files = sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file())  # tasks/<name>/... too
    print(json.dumps({"export": str(out), "files": files}))
    return 0


def cmd_serve(args: argparse.Namespace, extra: list[str]) -> int:
    """Serve a run over HTTP (FastAPI + uvicorn) until interrupted."""
    try:
        import uvicorn  # noqa: F401  (serve imports it; missing is reported before the model loads)

        from .inference.server import serve
    except ModuleNotFoundError as e:
        if (e.name or "").split(".")[0] not in ("fastapi", "uvicorn", "pydantic", "starlette"):
            raise
        raise ConfigError(
            f"minbert serve needs the [serve] extra ({e.name} is not installed): pip install 'minbert[serve]'"
        ) from None
    if extra:
        raise ConfigError(f"unrecognised argument {extra[0]!r}")
    serve(args.run_dir, host=args.host, port=args.port, device=args.device, max_items=args.max_items,
          max_chars=args.max_chars, access_log=not args.no_access_log, max_body_bytes=args.max_body_bytes,
          read_timeout=args.read_timeout)
    return 0


def cmd_suite(args: argparse.Namespace, extra: list[str]) -> int:
    """Run the paper's experiment table (the presets of a folder); see minbert.experiments.suite."""
    from .experiments.suite import JSON_NAME, MD_NAME, PNG_NAME, parse_only, run_suite

    rows = run_suite(
        args.preset_dir,
        data_dir=args.data_dir,
        runs_root=args.runs_root,
        report_dir=args.report_dir,
        only=parse_only(args.only),
        overrides=_split_overrides(extra),
        rerun=args.rerun,
        progress=not args.no_progress,
    )
    out = Path(args.report_dir)
    files = {"json": str(out / JSON_NAME), "md": str(out / MD_NAME), "png": str(out / PNG_NAME)}
    print(json.dumps({"rows": [r["exp"] for r in rows], **files}))
    return 0


def cmd_config_show(args: argparse.Namespace, extra: list[str]) -> int:
    """Print the resolved config as YAML, each field with its help text as a comment."""
    from .config import load_config, resolve
    from .config_doc import commented_yaml

    sys.stdout.write(commented_yaml(resolve(load_config(args.config, _split_overrides(extra)))))
    return 0


def cmd_config_schema(args: argparse.Namespace, extra: list[str]) -> int:
    """Print (or write to --output, atomically) the JSON Schema of a config file."""
    from .config_doc import json_schema

    if extra:
        raise ConfigError(f"unrecognised argument {extra[0]!r}")
    text = json.dumps(json_schema(), indent=2) + "\n"
    if not args.output:
        sys.stdout.write(text)
        return 0
    from .io import atomic_write_text, os_reason

    try:
        atomic_write_text(args.output, text)
    except OSError as e:
        raise ConfigError(f"--output {args.output}: cannot write ({os_reason(e)})") from None
    return 0


_RUN_DATA_HELP = "data folder (default: the one the run recorded in its provenance.json)"
_ALLOW_HELP = "go on when data files differ from the SHA-256 sums the run recorded (default: refuse)"


def _train_description() -> str:
    from .config_doc import section_help  # yaml and the standard library only

    width = max(len(name) for name, _ in section_help())
    rows = "\n".join(f"  {name:<{width}}  {text}" for name, text in section_help())
    return (
        "Extra arguments --section.key=value override the config (e.g. --optim.lr=2e-5).\n\n"
        f"Config sections:\n{rows}\n\n"
        "`minbert config show [--config F] [--section.key=value ...]` prints every field with its value\n"
        "and meaning; `minbert config schema` writes a JSON Schema of config files for editors."
    )


class _OneLineErrors(argparse.ArgumentParser):
    """argparse, whose usage errors are one line too (``error: ...``, exit 2), like every other
    user mistake; ``--help`` still prints the usage. Subcommand parsers inherit the class."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"error: {self.prog}: {message} (see: {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    """The ``minbert`` argument parser: global options and one subcommand per command (each sets
    ``fn``, the ``cmd_*`` function that runs it)."""
    p = _OneLineErrors(prog="minbert", description="Multi-task fine-tuning of BERT encoders.")
    p.add_argument("-v", "--verbose", action="store_true")
    p.add_argument("--version", action="version", version=f"minbert {__version__}")
    sub = p.add_subparsers(dest="command", required=True)
    _add_train_parser(sub)
    _add_run_parsers(sub)
    _add_experiment_parsers(sub)
    _add_config_parser(sub)
    _add_predict_parser(sub)
    return p


def _add_train_parser(sub: argparse._SubParsersAction) -> None:
    t = sub.add_parser(
        "train", help="train and evaluate a multi-task model", description=_train_description(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    t.add_argument("--config", help="YAML config (configs/default.yaml, configs/quick.yaml, ...)")
    t.add_argument("--data-dir", help="data folder (else data.dir, else $MINBERT_DATA_DIR; --resume: the run's)")
    t.add_argument("--run-dir", help="run folder (default: output.dir, else runs/<config name>)")
    t.add_argument("--resume", metavar="RUN_DIR", help="continue a killed run from its last checkpoint")
    t.add_argument("--allow-data-change", action="store_true", help=_ALLOW_HELP)
    t.add_argument("--overwrite", action="store_true", help="replace an existing run in the run folder")
    t.add_argument("--no-progress", action="store_true", help="no progress bars")
    t.add_argument("--strict", action="store_true", help="any bad data row is fatal (same as --data.strict=true)")
    t.set_defaults(fn=cmd_train)


def _add_run_parsers(sub: argparse._SubParsersAction) -> None:
    """evaluate, ensemble, export and serve: commands on finished run folders."""
    e = sub.add_parser("evaluate", help="dev metrics and prediction files again, from the best checkpoint")
    e.add_argument("run_dir")
    e.add_argument("--data-dir", help=_RUN_DATA_HELP)
    e.add_argument("--allow-data-change", action="store_true", help=_ALLOW_HELP)
    e.add_argument("--device", default="auto", help="auto (CUDA where available, else CPU), cpu, cuda or cuda:N")
    e.add_argument(
        "--full", action="store_true", help="score the whole dev sets (the run's dev_limit samples otherwise)"
    )
    e.add_argument("--no-progress", action="store_true", help="no progress bars")
    e.set_defaults(fn=cmd_evaluate)

    en = sub.add_parser("ensemble", help="average several runs' predictions (e.g. seeds) on dev and test")
    en.add_argument("run_dirs", nargs="+")
    en.add_argument("--out", required=True, help="folder for eval.json and predictions/")
    en.add_argument("--data-dir", help=_RUN_DATA_HELP)
    en.add_argument("--allow-data-change", action="store_true", help=_ALLOW_HELP)
    en.add_argument("--device", default="auto", help="auto (CUDA where available, else CPU), cpu, cuda or cuda:N")
    en.add_argument("--format", choices=["default", "cs224n"], default="default")
    en.add_argument("--no-progress", action="store_true", help="no progress bars")
    en.set_defaults(fn=cmd_ensemble)

    ex = sub.add_parser("export", help="write a run as a Hugging Face BERT folder (+ minbert heads file)")
    ex.add_argument("run_dir")
    ex.add_argument("out", help="export folder (loads with transformers.BertModel.from_pretrained and minbert.load)")
    ex.add_argument("--overwrite", action="store_true", help="replace an export in a non-empty OUT")
    ex.set_defaults(fn=cmd_export)

    sv = sub.add_parser("serve", help="HTTP service and demo page for a run (FastAPI + uvicorn)")
    sv.add_argument("run_dir")
    sv.add_argument("--host", default="127.0.0.1")
    sv.add_argument("--port", type=int, default=8000)
    sv.add_argument("--device", default="auto", help="auto (CUDA where available, else CPU), cpu, cuda or cuda:N")
    sv.add_argument("--max-items", type=int, default=256, help="items per request (more: 413)")
    sv.add_argument("--max-chars", type=int, default=10_000, help="characters per text (more: 413)")
    sv.add_argument("--max-body-bytes", type=int, default=None,
                    help="request body bytes, checked while it is read (more: 413); default: the largest valid "
                    "request, max_items * (2 * max_chars * 12 + 64) + 1024 (61457408 for the defaults)")
    sv.add_argument("--read-timeout", type=float, default=30.0,
                    help="seconds a client has to send each request, headers and body; then its connection is "
                    "closed")
    sv.add_argument("--no-access-log", action="store_true", help="no log line per request")
    sv.set_defaults(fn=cmd_serve)


def _add_experiment_parsers(sub: argparse._SubParsersAction) -> None:
    """suite, tune and ablate: commands that train many runs."""
    st = sub.add_parser(
        "suite",
        help="run the paper's experiment table (configs/paper/) and write reports/paper_suite.{json,md,png}",
        description="Extra arguments --section.key=value override every preset (e.g. --train.epochs=3 "
        "--model.encoder=PATH).",
    )
    st.add_argument("preset_dir", help="folder of expNN-<name>.yaml presets (configs/paper/)")
    st.add_argument("--data-dir", help="cs224n data folder (else data.dir, else $MINBERT_DATA_DIR)")
    st.add_argument(
        "--runs-root", default="runs/paper", help="run folders go to RUNS_ROOT/<preset name> (default: runs/paper)"
    )
    st.add_argument("--report-dir", default="reports", help="where paper_suite.{json,md,png} go (default: reports)")
    st.add_argument("--only", help="rows to run, e.g. 1,7,14 (default: every preset)")
    st.add_argument("--rerun", action="store_true", help="train the rows again even if their results exist")
    st.add_argument("--no-progress", action="store_true", help="no progress bars")
    st.set_defaults(fn=cmd_suite)

    tu = sub.add_parser(
        "tune",
        help="optuna hyperparameter search (SQLite study, resumable, median pruning)",
        description="Extra arguments --section.key=value override the base config.",
    )
    tu.add_argument("--config", help="the base YAML config")
    tu.add_argument("--study-dir", required=True, help="study.db, trial-NNNN/ run folders, trials.json, best.yaml")
    tu.add_argument("--trials", type=int, default=20, help="finished + pruned trials the study should hold")
    tu.add_argument("--data-dir")
    tu.add_argument(
        "--seed", type=int, default=0, help="the TPE sampler's seed (give parallel workers different seeds)"
    )
    tu.add_argument("--timeout", type=float, help="start no new trial after this many seconds (running ones finish)")
    tu.set_defaults(fn=cmd_tune)

    ab = sub.add_parser(
        "ablate",
        help="train an ablation chain (configs/beyond/ablation.yaml) and write reports/beyond.{json,md}",
        description="Extra arguments --section.key=value override every row.",
    )
    ab.add_argument("file", help="the ablation YAML")
    ab.add_argument("--data-dir")
    ab.add_argument("--runs-root", default="runs/beyond")
    ab.add_argument("--report-dir", default="reports")
    ab.add_argument("--only", help="rows to train, by name (default: all)")
    ab.add_argument("--final", action="store_true", help="train the final row once per seed")
    ab.add_argument("--seeds", help="with --final: these seeds instead of the file's")
    ab.add_argument(
        "--report-only", action="store_true", help="train nothing; rewrite the report from the finished runs"
    )
    ab.add_argument("--no-progress", action="store_true")
    ab.set_defaults(fn=cmd_ablate)


def _add_config_parser(sub: argparse._SubParsersAction) -> None:
    c = sub.add_parser("config", help="show the resolved config with every field explained, or its JSON Schema")
    csub = c.add_subparsers(dest="config_command", metavar="{show,schema}", required=True)
    cs = csub.add_parser(
        "show", help="print the resolved config as YAML, each field with its meaning",
        description="Extra arguments --section.key=value override the config, as for train.",
    )
    cs.add_argument("--config", help="YAML config (default: the built-in defaults)")
    cs.set_defaults(fn=cmd_config_show)
    cj = csub.add_parser("schema", help="print a JSON Schema (draft 2020-12) of config files, for YAML editors")
    cj.add_argument("--output", help="write it to this file instead of stdout")
    cj.set_defaults(fn=cmd_config_schema)


def _add_predict_parser(sub: argparse._SubParsersAction) -> None:
    q = sub.add_parser("predict", help="predict one text (pair) or a file of them")
    q.add_argument("run_dir")
    q.add_argument("--task", required=True)
    q.add_argument("--text", nargs="+", help="one sentence, or two for a pair task")
    q.add_argument(
        "--input",
        help="a .csv/.tsv/.jsonl file with columns id (optional), sentence (or sentence1, sentence2; a custom "
        "task's own columns); bad rows are reported and skipped",
    )
    q.add_argument(
        "--input-format", choices=["auto", "csv", "tsv", "jsonl"], default="auto",
        help="how to read --input (auto: by its suffix; tsv for tab-separated files named .csv, as the course's)",
    )
    q.add_argument("--output", help="write a CSV here instead of stdout")
    q.add_argument("--device", default="auto", help="auto (CUDA where available, else CPU), cpu, cuda or cuda:N")
    q.add_argument("--batch-size", type=int, default=64)
    q.add_argument(
        "--quantize", choices=["int8"],
        help="dynamic int8 quantisation of the Linear layers (CPU only; outputs change: see docs/performance.md)",
    )
    q.add_argument("--no-progress", action="store_true", help="no progress bar")
    q.set_defaults(fn=cmd_predict)


# OSErrors that the user's environment causes (permissions, a full disk, a path that is a file):
# one line, not a traceback
_USER_ERRNOS = {
    errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOSPC, errno.EDQUOT, errno.ENAMETOOLONG, errno.ENOTDIR, errno.EISDIR,
    errno.EEXIST, errno.ENOENT,
}


def main(argv: list[str] | None = None) -> int:
    """Run one command. Returns the exit code: 0, 2 for a user mistake or a failed allocation (one
    ``error:`` line on stderr), 128 + the signal number for an interrupt (130 SIGINT, 143 SIGTERM)."""
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    _setup_logging(args.verbose)
    try:
        return args.fn(args, extra)
    except MinbertError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except OSError as e:
        if e.errno not in _USER_ERRNOS:
            raise
        from .io import os_reason

        print(f"error: {e.filename + ': ' if e.filename else ''}{os_reason(e)}", file=sys.stderr)
        return 2
    except (MemoryError, RuntimeError) as e:
        reason = out_of_memory(e)
        if reason is None:
            raise
        print(f"error: out of memory: {reason}; use smaller batches (tasks.NAME.batch_size, train.eval_batch_size, "
              "predict's --batch-size) or a smaller model.max_length", file=sys.stderr)
        return 2
    except TrainingInterrupted as e:
        print(str(e), file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


def entry() -> NoReturn:
    """The ``minbert`` command (and ``python -m minbert``): :func:`main`, then the process ends at
    once (``os._exit``) with its exit code, once stdout, stderr and the log handlers are flushed.
    Every file a command writes is closed and on disk, and every thread and child process it
    started is done, before :func:`main` returns; what the skipped teardown would do is free the
    CUDA graphs, the CUDA context and the modules (0.65 s after a default run on an H200,
    ``reports/bench/s12/s12-call1-timing-*.log``). An exception :func:`main` does not handle
    propagates as usual."""
    code = main()
    sys.stdout.flush()
    sys.stderr.flush()
    logging.shutdown()
    os._exit(code)


if __name__ == "__main__":
    entry()
