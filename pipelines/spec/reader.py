"""Reading a spec file as YAML: UTF-8 only, no duplicate keys, no alias bombs, one-line errors."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from slimline.pipelines.errors import SpecError
from slimline.tasks.base import utf8_error

MAX_VALUES = 100_000


class _Loader(yaml.SafeLoader):
    """Safe YAML that refuses duplicate keys (the last one would silently win)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)  # type: ignore[no-untyped-call]
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key!r}", key_node.start_mark
                )
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def read_yaml(path: Path) -> Any:
    """The file's YAML document, or SpecError with the line of the problem."""
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as exc:
        raise SpecError(f"{path}: {utf8_error(exc)}") from None
    except OSError as exc:
        raise SpecError(f"{path}: cannot read ({exc.strerror})") from None
    try:
        data = yaml.load(text, Loader=_Loader)  # a SafeLoader: plain data only
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}" if mark else "<root>"
        problem = getattr(exc, "problem", None) or getattr(exc, "reason", None) or exc
        raise SpecError(f"{path}: {where}: not valid YAML ({' '.join(str(problem).split())})") from None
    if _too_big(data):  # aliases of aliases: a few hundred bytes can stand for millions of values
        raise SpecError(f"{path}: <root>: YAML aliases expand to more than {MAX_VALUES} values")
    return data


def _too_big(data: Any) -> bool:
    """Whether the document, with every alias expanded, holds more than MAX_VALUES values."""
    stack, count = [data], 0
    while stack:
        item = stack.pop()
        count += 1
        if count > MAX_VALUES:
            return True
        if isinstance(item, dict):
            stack += [*item.keys(), *item.values()]
        elif isinstance(item, list):
            stack += item
    return False
