"""Where a served model comes from, and the application builder a RayService imports.

`registry_source` is shared by `slimline serve` (which pulls the version once into a local
cache) and by `build`, which KubeRay's Serve controller calls with the RayService's `args`: there
the tracking URI comes from $MLFLOW_TRACKING_URI (a Secret) and each replica pulls its own copy.
"""

from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import Any

from slimline.cluster.serve import ServeSource, application
from slimline.pipelines.spec.serve import ServeConfig

IMPORT_PATH = "slimline.cluster.serve_app:build"


def registry_source(uri: str, ref: str, cache: Path | None = None) -> ServeSource:
    """The version REF names (NAME@alias, NAME/version or NAME), pulled under `cache` when given."""
    from slimline.registry.browse import Browser, Ref, cached_pull, lineage_of, pull_version
    from slimline.registry.store import check_reachable

    check_reachable(uri)
    parsed = Ref.parse(ref)
    browser = Browser(uri)
    mv = browser.version(parsed)
    lineage = lineage_of(mv)
    return ServeSource(
        str(cached_pull(browser, mv, cache)) if cache is not None else None,
        name=mv.name,
        version=str(mv.version),
        alias=parsed.alias,
        variant=lineage.get("variant_id"),
        lineage=lineage,
        fetch=partial(pull_version, uri, mv.name, str(mv.version)),
    )


def build(args: dict[str, Any]) -> Any:
    """Serve application builder: args {"ref": "NAME@alias", "serve": {ServeConfig fields}}."""
    from slimline.pipelines.uris import resolve_uri

    cfg = ServeConfig.model_validate(args.get("serve") or {})
    return application(registry_source(resolve_uri(None), str(args["ref"])), cfg)
