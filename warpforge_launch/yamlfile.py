"""YAML as the user's files are read (inventory, sweep files): safe, and strict about keys.

PyYAML keeps the last of two equal keys in a mapping (`name: x` then `name: y` reads as
`name: y`), so a typo'd copy silently replaces a value. Here a duplicate key is a
``yaml.YAMLError`` whose mark points at the second occurrence, reported by the callers as
their other YAML errors are (`... is not valid YAML at line L, column C: duplicate key ...`).
YAML merge keys (`<<: *base` then a key of base) override, as YAML means, and are allowed.
"""

from __future__ import annotations

from typing import Any

_LOADER: Any = None


def _loader() -> Any:
    global _LOADER
    if _LOADER is None:
        import yaml

        class StrictLoader(getattr(yaml, "CSafeLoader", yaml.SafeLoader)):  # type: ignore[misc]
            def construct_mapping(self, node, deep=False):
                if isinstance(node, yaml.MappingNode):
                    _refuse_duplicates(self, node)
                return super().construct_mapping(node, deep=deep)

        _LOADER = StrictLoader
    return _LOADER


def _refuse_duplicates(loader: Any, node: Any) -> None:
    from yaml.constructor import ConstructorError

    first: dict[Any, Any] = {}
    for key_node, _ in node.value:
        if key_node.tag == "tag:yaml.org,2002:merge":
            continue
        key = loader.construct_object(key_node, deep=True)
        try:
            seen = first.setdefault(key, key_node)
        except TypeError:
            continue  # an unhashable key: PyYAML's own error names it
        if seen is not key_node:
            raise ConstructorError(
                "while constructing a mapping", node.start_mark,
                f"duplicate key {key!r} (first at line {seen.start_mark.line + 1})",
                key_node.start_mark)


def read(path: Any, what: str) -> Any:
    """The document in the file ``path``, read as UTF-8. A file that is not UTF-8 text or
    not valid YAML (a key given twice included) is a one-line UsageError naming ``what``
    (`inventory`, `sweep file`) and where; OSError is the caller's to word."""
    import yaml

    from warpforge_launch.errors import UsageError

    try:
        with open(path, encoding="utf-8") as fh:
            text = fh.read()
    except UnicodeDecodeError as exc:
        raise UsageError(f"{what} {path} is not UTF-8 text (byte {exc.start}: "
                         f"{exc.object[exc.start:exc.start + 1]!r})") from None
    try:
        return load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise UsageError(f"{what} {path} is not valid YAML{where}: {problem}") from None


def load(text: str) -> Any:
    """The document in ``text``; ``yaml.YAMLError`` for bad YAML or a key given twice."""
    import yaml

    return yaml.load(text, Loader=_loader())
