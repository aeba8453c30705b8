"""slimline: compress transformer models and get them ready to ship.

Import name: `slimline`. The repository's `pipelines/`, `tasks/`, `cluster/` and `registry/` folders
are installed as `slimline.pipelines`, `slimline.tasks`, `slimline.cluster` and
`slimline.registry`, so a user's own `tasks.py` or `registry/` can never shadow them.

The Python API (`slimline.validate`, `plan`, `run`, `load`, `__version__`) lives in `slimline.api`
and is re-exported here lazily: `import slimline` stays cheap and imports neither ray nor mlflow.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

# Installed, the four subpackages sit inside this folder. In a source checkout they are the
# folders beside it, linked here (slimline/tasks -> ../tasks, ...) so that tools which read the
# tree rather than import it (import-linter from the repository root) see one package; where the
# links are lost (a project uploaded with `slimline submit --with-project`), look beside it.
_checkout = Path(__file__).resolve().parent.parent
if not (Path(__file__).parent / "tasks").is_dir() and (_checkout / "tasks" / "base.py").is_file():
    __path__.append(str(_checkout))

if TYPE_CHECKING:
    from slimline.api import FatalInputError, SpecError, TaskError, __version__, load, plan, run, validate

__all__ = ["FatalInputError", "SpecError", "TaskError", "__version__", "load", "plan", "run", "validate"]


def __getattr__(name: str) -> Any:
    # Lazy: the API pulls in pydantic models and the spec; `python -m slimline --help` need not.
    if name in __all__:
        from slimline import api

        return getattr(api, name)
    raise AttributeError(f"module 'slimline' has no attribute {name!r}")
