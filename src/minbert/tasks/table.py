"""The task table of a run: the built-in tasks plus the config's own, by name.

Built-in tasks are registered once, at import, in :data:`minbert.tasks.base.TASKS`. A config's
``custom_tasks`` never enter that registry: each run (or loaded model) builds its own table, so
two runs with different custom tasks of the same name can live in one process.
"""

from __future__ import annotations

from ..config import Config
from ..errors import ConfigError
from .base import TASKS, Task
from .custom import build_custom_task


def task_table(cfg: Config) -> dict[str, Task]:
    """Every task the config can name: ``{name: Task}``, built-in tasks first.

    Raises:
        ConfigError: a custom task definition is invalid or takes a built-in task's name, or
            ``cfg.tasks`` names a task that is neither built in nor defined in ``custom_tasks``.
    """
    table: dict[str, Task] = dict(TASKS)
    for name, definition in cfg.custom_tasks.items():
        if name in TASKS:
            raise ConfigError(f"custom_tasks.{name}: {name!r} is a built-in task; choose another name")
        table[name] = build_custom_task(name, definition)
    for name in cfg.tasks:
        if name not in table:
            raise ConfigError(
                f"tasks.{name}: unknown task (built-in: {sorted(TASKS)}; "
                f"define your own under custom_tasks: {sorted(cfg.custom_tasks) or 'none defined'})"
            )
    return table
