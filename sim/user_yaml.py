"""The one reader of YAML that users write (actions.yaml, economics.yaml, stages.yaml, run configs,
scenario files, --set values): safe tags only, no aliases, bounded size and depth, UTF-8.

A YAML alias (`*name`) lets a few hundred bytes expand into gigabytes when something walks the
document (the "billion laughs"); no clv-engine file needs one, so an alias is refused where it
appears, before anything is built. Problems raise `UserYamlError` (file, line, what to do); each
caller turns it into its own error type.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

MAX_BYTES = 5_000_000  # a configuration file, not data
MAX_DEPTH = 40  # mappings and lists nested deeper than any clv-engine file needs


class UserYamlError(ValueError):
    """A YAML file a user wrote cannot be read: `line` (1-based) when known, `problem` in words."""

    def __init__(self, problem: str, line: int | None = None):
        self.problem, self.line = problem, line
        super().__init__(f"line {line}: {problem}" if line is not None else problem)


class _NoAliasLoader(yaml.SafeLoader):
    """SafeLoader that refuses aliases and nesting deeper than MAX_DEPTH while composing."""

    def __init__(self, stream):
        super().__init__(stream)
        self._depth = 0

    def compose_node(self, parent, index):
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            raise UserYamlError(
                f"an alias (*{event.anchor}) is not accepted in clv-engine files; write the value out",
                event.start_mark.line + 1,
            )
        self._depth += 1
        try:
            if self._depth > MAX_DEPTH:
                mark = self.peek_event().start_mark
                raise UserYamlError(f"nested more than {MAX_DEPTH} levels deep", mark.line + 1)
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1


def load_yaml_text(text: str) -> Any:
    """The document of YAML `text` (safe tags, no aliases, bounded depth)."""
    if len(text) > MAX_BYTES:
        raise UserYamlError(f"larger than {MAX_BYTES // 1_000_000} MB: not a configuration file")
    try:
        return yaml.load(text, Loader=_NoAliasLoader)  # noqa: S506 - a SafeLoader subclass
    except UserYamlError:
        raise
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        where = "" if mark is None else f"line {mark.line + 1}: "
        raise UserYamlError(f"not valid YAML: {where}{problem}") from None
    except (ValueError, TypeError, OverflowError) as e:  # e.g. a date 2024-13-45 that the resolver turns into a date
        node = _failing_scalar(text)
        if node is not None:
            raise UserYamlError(
                f"{node.value[:80]!r} cannot be read ({e}); write a real date (YYYY-MM-DD), or quote it as text",
                node.start_mark.line + 1,
            ) from None
        raise UserYamlError(f"a value YAML cannot read: {e}") from None
    except RecursionError:
        raise UserYamlError(f"nested more than {MAX_DEPTH} levels deep") from None


def _failing_scalar(text: str):
    """The first scalar of `text` whose construction fails (its line names the problem), or None."""
    try:
        root = yaml.compose(text, Loader=_NoAliasLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError:
        return None
    loader = _NoAliasLoader("")
    stack = [root] if root is not None else []
    while stack:
        node = stack.pop(0)
        if isinstance(node, yaml.ScalarNode):
            try:
                loader.construct_object(node, deep=True)
            except (ValueError, TypeError, OverflowError):
                return node
        elif isinstance(node, yaml.SequenceNode):
            stack[:0] = node.value
        elif isinstance(node, yaml.MappingNode):
            stack[:0] = [n for kv in node.value for n in kv]
    return None


def load_yaml_file(path: str | Path) -> Any:
    """The document of the YAML file at `path` (see `load_yaml_text`); not UTF-8 is a UserYamlError."""
    path = Path(path)
    if path.stat().st_size > MAX_BYTES:
        raise UserYamlError(f"larger than {MAX_BYTES // 1_000_000} MB: not a configuration file")
    try:
        text = path.read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise UserYamlError(f"not UTF-8 text (byte {e.start}); save it as UTF-8") from None
    return load_yaml_text(text)


__all__ = ["UserYamlError", "load_yaml_text", "load_yaml_file", "MAX_BYTES", "MAX_DEPTH"]
