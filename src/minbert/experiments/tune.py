"""Hyperparameter search with optuna (``minbert tune``).

Each trial trains the base config with sampled values (TPE sampler, Bergstra et al. 2011) and is
scored by its best overall dev score. After every epoch the trial reports its dev overall, and
the median pruner (optuna ``MedianPruner``) stops trials that fall below the median of earlier
trials at the same epoch. The study lives in ``STUDY_DIR/study.db`` (SQLite): running the same
command again resumes it, and trials left running by a killed process are marked failed
(optuna's heartbeat). Each trial's run folder is ``STUDY_DIR/trial-NNNN``; the best trial's
resolved config is written to ``STUDY_DIR/best.yaml`` and every trial to ``trials.json``; at the
end, with ``output.plot``, optuna's optimisation history (``history.png``) and parameter
importances (``importances.png``) are drawn (:func:`write_study_plots`).
"""

from __future__ import annotations

import functools
import logging
import math
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from ..config import Config, dump_yaml, from_dict, load_config, resolve, to_dict
from ..errors import ConfigError
from ..io import atomic_write_json, atomic_write_png, atomic_write_text

if TYPE_CHECKING:
    import optuna

log = logging.getLogger(__name__)

HISTORY_PNG = "history.png"
IMPORTANCES_PNG = "importances.png"


@dataclass(frozen=True)
class Param:
    """One searched value: a dotted config key and its range."""

    key: str  # e.g. "optim.lr"; "tasks.*.dropout" sets every task's dropout
    low: float
    high: float
    log: bool = False
    integer: bool = False  # sample whole numbers low..high (optuna suggest_int)


# the default search space: the optimisation knobs that matter most for fine-tuning
SPACE = (
    Param("optim.lr", 1e-5, 2e-4, log=True),
    Param("optim.head_lr", 1e-5, 1e-3, log=True),
    Param("optim.layer_lr_decay", 0.7, 1.0),
    Param("optim.warmup_ratio", 0.0, 0.2),
    Param("tasks.*.dropout", 0.0, 0.3),
    Param("train.epochs", 2, 5, integer=True),
)


def apply_params(cfg: Config, values: dict[str, float]) -> Config:
    """A new config with the dotted ``values`` set (``tasks.*.x`` sets x for every task).

    Raises:
        ConfigError: a key that is not in the config.
    """
    raw = to_dict(cfg)
    for key, value in values.items():
        parts = key.split(".")
        targets = [raw]
        for part in parts[:-1]:
            nxt = []
            for t in targets:
                if part == "*":
                    nxt.extend(t.values())
                elif isinstance(t, dict) and part in t:
                    nxt.append(t[part])
                else:
                    raise ConfigError(f"tune: {key}: no such config key")
            targets = nxt
        for t in targets:
            if parts[-1] not in t:
                raise ConfigError(f"tune: {key}: no such config key")
            t[parts[-1]] = value
    return from_dict(raw)


def tune(
    cfg: Config,
    study_dir: str | Path,
    n_trials: int = 20,
    data_dir: str | Path | None = None,
    space: tuple[Param, ...] = SPACE,
    seed: int = 0,
    timeout: float | None = None,
) -> dict:
    """Run (or resume) the study until it holds ``n_trials`` finished or pruned trials, or until
    ``timeout`` seconds have passed (no new trial starts after that). Several processes may run
    the same study at once (give them different ``seed``). ``trials.json`` and ``best.yaml`` are
    rewritten after every trial, so a killed worker loses only its running trial.

    Returns ``{"best_value", "best_params", "best_trial", "n_trials"}``.

    A study remembers its base config: resuming it with another one is an error (the trials
    would not be comparable). A worker seeds its sampler from ``seed`` and the number of trials
    already in the study, so a resumed worker does not repeat earlier trials' values.

    Raises:
        ConfigError: optuna is not installed; the space names an unknown key; ``n_trials`` < 1,
            ``timeout`` not > 0 or ``seed`` < 0; ``study_dir`` is a file; the study folder holds
            a study of another base config; the data folder does not exist.
        CheckpointError: the encoder folder does not exist.
    """
    try:
        import optuna
        import sqlalchemy.exc  # noqa: F401  (the study's storage, used by _open_study: missing is this error)
    except ImportError:
        raise ConfigError("minbert tune needs optuna: pip install 'minbert[tune]'") from None

    study_dir = Path(study_dir)
    _check_arguments(cfg, study_dir, n_trials, data_dir, space, seed, timeout)
    study = _open_study(cfg, study_dir)
    # distinct for each (seed, trials so far): neither a resumed worker nor a parallel one with
    # another seed repeats a sequence
    study.sampler = optuna.samplers.TPESampler(seed=(seed * 1_000_003 + len(study.trials)) % 2**32)
    write_files = functools.partial(_write_files, cfg=cfg, study_dir=study_dir)
    counted = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
    done = sum(t.state in counted for t in study.trials)
    if done < n_trials:
        # the callback stops this worker once the study (all workers) holds n_trials
        enough = optuna.study.MaxTrialsCallback(n_trials, states=counted)
        objective = functools.partial(_objective, cfg=cfg, space=space, study_dir=study_dir, data_dir=data_dir)
        study.optimize(objective, n_trials=n_trials - done, timeout=timeout, catch=(), callbacks=[enough, write_files])
    result = write_files(study)
    if cfg.output.plot:
        write_study_plots(study, study_dir)
    return result


def _check_arguments(
    cfg: Config, study_dir: Path, n_trials: int, data_dir: str | Path | None, space: tuple[Param, ...], seed: int,
    timeout: float | None,
) -> None:
    """Refuse what would fail in every trial, before the study is opened (see :func:`tune`)."""
    from ..config_compile import compile_options
    from ..data.batching import resolve_data_dir
    from ..model.hf_folder import resolve_encoder_path

    if n_trials < 1:
        raise ConfigError(f"tune: --trials must be >= 1, got {n_trials}")
    if timeout is not None and not (math.isfinite(timeout) and timeout > 0):
        raise ConfigError(f"tune: --timeout must be a positive number of seconds, got {timeout}")
    if seed < 0:
        raise ConfigError(f"tune: --seed must be >= 0, got {seed}")
    if study_dir.exists() and not study_dir.is_dir():
        raise ConfigError(f"tune: --study-dir {study_dir} is a file, not a folder")
    apply_params(cfg, {p.key: int(p.low) if p.integer else p.low for p in space})  # fail early on an unknown key
    resolve_encoder_path(cfg.model.encoder)  # a missing encoder or data folder fails here, not in a trial
    compile_options(cfg.train)  # as do inductor settings this torch does not take
    resolve_data_dir(str(data_dir) if data_dir else None, cfg.data.dir)


def _open_study(cfg: Config, study_dir: Path) -> optuna.Study:
    """Create or load the study ``cfg.name`` in ``study_dir/study.db`` and mark the trials of killed
    workers failed.

    Raises:
        ConfigError: the database holds another study, or this study was started from another
            base config.
    """
    import optuna
    import sqlalchemy.exc

    from .rows import jsonable

    study_dir.mkdir(parents=True, exist_ok=True)
    for attempt in range(5):  # workers starting together race to create the SQLite schema
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)  # heartbeat
                storage = optuna.storages.RDBStorage(
                    f"sqlite:///{study_dir.resolve() / 'study.db'}", heartbeat_interval=30, grace_period=90,
                    engine_kwargs={"connect_args": {"timeout": 60}},  # parallel workers wait for SQLite's lock
                )
            others = [n for n in optuna.study.get_all_study_names(storage) if n != cfg.name]
            study = optuna.create_study(
                study_name=cfg.name, storage=storage, load_if_exists=True, direction="maximize",
                pruner=optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=1),
            )
            break
        except (sqlalchemy.exc.IntegrityError, sqlalchemy.exc.OperationalError, optuna.exceptions.DuplicatedStudyError):
            if attempt == 4:
                raise
            time.sleep(0.5 * (attempt + 1))
    if others:
        raise ConfigError(f"tune: {study_dir} holds the study {others[0]!r}, not {cfg.name!r}; use another --study-dir")
    base = jsonable(to_dict(resolve(cfg)))  # JSON types, as the storage keeps them
    stored = study.user_attrs.get("base_config")
    if stored is None:
        study.set_user_attr("base_config", base)
    elif stored != base:
        keys = _differing_keys(stored, base)
        raise ConfigError(
            f"tune: {study_dir}: the study was started from another base config (differs in {', '.join(keys[:5])}); "
            "use another --study-dir"
        )
    optuna.storages.fail_stale_trials(study)  # trials of killed workers (no heartbeat): FAIL
    return study


def _objective(
    trial: optuna.Trial, *, cfg: Config, space: tuple[Param, ...], study_dir: Path, data_dir: str | Path | None
) -> float:
    """Train one trial (``study_dir/trial-NNNN``) with values sampled from ``space``; its best
    overall dev score. Reports every epoch's overall to the pruner (optuna.TrialPruned stops it)."""
    import optuna

    from ..training.trainer import train

    values = {
        p.key: trial.suggest_int(p.key, int(p.low), int(p.high), log=p.log)
        if p.integer
        else trial.suggest_float(p.key, p.low, p.high, log=p.log)
        for p in space
    }
    trial_cfg = apply_params(cfg, values)

    def report(epoch: int, dev: dict) -> None:
        score = dev.get("overall")
        trial.report(-math.inf if score is None else score, epoch)
        if trial.should_prune():
            raise optuna.TrialPruned(f"epoch {epoch}: overall {score}")

    run = train(
        trial_cfg, study_dir / f"trial-{trial.number:04d}", data_dir=data_dir, overwrite=True, progress=False,
        on_epoch_end=report,
    )
    best = run.summary["dev"]["overall"]
    trial.set_user_attr("dev", run.summary["dev"])
    return best


def _write_files(
    study: optuna.Study, _trial: optuna.trial.FrozenTrial | None = None, *, cfg: Config, study_dir: Path
) -> dict:
    """Write ``trials.json`` (every trial) and ``best.yaml`` (the best complete trial's resolved
    config); the study's summary (see :func:`tune`)."""
    import optuna

    trials = [
        {"number": t.number, "state": t.state.name, "value": t.value, "params": t.params,
         "dev": t.user_attrs.get("dev"), "epochs_reported": len(t.intermediate_values)}
        for t in study.get_trials(deepcopy=False)
    ]
    atomic_write_json(study_dir / "trials.json", trials)
    complete = [t for t in study.get_trials(deepcopy=False) if t.state == optuna.trial.TrialState.COMPLETE]
    if not complete:
        return {"best_value": None, "best_params": None, "best_trial": None, "n_trials": len(trials)}
    best = max(complete, key=lambda t: t.value)
    trial_config = study_dir / f"trial-{best.number:04d}" / "config.yaml"  # what the trial trained
    best_cfg = load_config(trial_config) if trial_config.is_file() else apply_params(cfg, best.params)
    atomic_write_text(study_dir / "best.yaml", dump_yaml(resolve(best_cfg)))
    return {"best_value": best.value, "best_params": best.params, "best_trial": best.number, "n_trials": len(trials)}


def write_study_plots(study: optuna.Study, study_dir: str | Path) -> list[str]:
    """Draw the study's optimisation history (``history.png``: each complete trial's value by
    trial number and the best so far, optuna's ``plot_optimization_history``) and its parameter
    importances (``importances.png``: fANOVA with seed 0, ``plot_param_importances``) in
    ``study_dir`` with matplotlib (Agg); returns the names of the files written.

    The history needs a complete trial, the importances 2 complete trials and 2 parameters;
    otherwise that plot is skipped with one log line. A plot that raises is logged as one warning
    and skipped; matplotlib's settings are restored afterwards (optuna's plots set a style).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import optuna
    from optuna.visualization import matplotlib as views

    study_dir = Path(study_dir)
    complete = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    n_params = len({k for t in complete for k in t.params})
    jobs = []
    if complete:
        jobs.append((HISTORY_PNG, functools.partial(views.plot_optimization_history, target_name="dev overall")))
    else:
        log.info("%s not drawn: no complete trial yet", HISTORY_PNG)
    if len(complete) >= 2 and n_params >= 2:
        evaluator = optuna.importance.FanovaImportanceEvaluator(seed=0)
        draw = functools.partial(views.plot_param_importances, evaluator=evaluator, target_name="dev overall")
        jobs.append((IMPORTANCES_PNG, draw))
    else:
        log.info("%s not drawn: importances need 2 complete trials and 2 parameters (have %d and %d)",
                 IMPORTANCES_PNG, len(complete), n_params)
    written = []
    for name, draw in jobs:
        before = set(plt.get_fignums())
        try:
            with warnings.catch_warnings(), matplotlib.rc_context():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                atomic_write_png(study_dir / name, draw(study).figure, tight=True)
            written.append(name)
        except Exception as e:  # a plot is never worth the study
            log.warning("%s not drawn: %s: %s", name, type(e).__name__, " ".join(str(e).split()))
        finally:
            for num in set(plt.get_fignums()) - before:
                plt.close(num)
    return written


def _differing_keys(a: object, b: object, prefix: str = "") -> list[str]:
    """Dotted keys whose values differ between two nested dicts."""
    if isinstance(a, dict) and isinstance(b, dict):
        return [
            k for key in sorted(set(a) | set(b)) for k in _differing_keys(a.get(key), b.get(key), f"{prefix}{key}.")
        ]
    return [] if a == b else [prefix.rstrip(".")]
