"""slimline: compress transformer models and get them ready to ship.

One import package: the repository's `pipelines/`, `tasks/`, `cluster/` and `registry/` folders
are installed as `slimline.pipelines`, `slimline.tasks`, `slimline.cluster` and
`slimline.registry`, so a user's own `tasks.py` or `registry/` can never shadow them.
"""

from __future__ import annotations

from pathlib import Path

# Installed, the four subpackages sit inside this folder. In a source checkout (or a project
# uploaded with `slimline submit --with-project`) they are the folders beside it: look there too.
_checkout = Path(__file__).resolve().parent.parent
if not (Path(__file__).parent / "tasks").is_dir() and (_checkout / "tasks" / "base.py").is_file():
    __path__.append(str(_checkout))
