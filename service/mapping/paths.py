"""Element paths into FHIR JSON, read and written by the same definition.

A path is dot-separated steps. A step is an element name, optionally followed by a selector:

- ``code``                      the element (a list element is treated as its first item)
- ``identifier[1]``             list item by position
- ``extension(<url>)``          the list item whose ``url`` equals ``<url>`` (extension slicing)
- ``component(<system>|<code>)`` the list item whose ``code.coding`` contains that coding
  (component slicing by pattern)
- ``component(<system>|<code>)[1]`` the second item of that slice
- ``extension(<url>)[*]``, ``bodySite[*]`` every item of the list or slice (only with
  ``get_all``/``put_all``; at most one ``[*]`` step per path)

Both mapping directions use one path: ``put`` creates what is missing (with the slice
discriminator filled in), ``get`` returns None where anything is missing. Mapping definitions in
``mappings/`` are written in this language so a FHIR engineer can read them as element paths.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import cache
from typing import Any

_STEP = re.compile(
    r"^(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?:\((?P<selector>[^()]*)\))?(?:\[(?P<index>\d+|\*)\])?$"
)


@dataclass(frozen=True)
class Step:
    name: str
    index: int | None = None
    url: str | None = None
    coding: tuple[str, str] | None = None
    every: bool = False
    is_slice: bool = field(init=False, repr=False, compare=False)
    is_list: bool = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        # read on every step of every put/get: worked out once per parsed step
        object.__setattr__(self, "is_slice", self.url is not None or self.coding is not None)
        object.__setattr__(self, "is_list", self.index is not None or self.is_slice or self.every)

    def matches(self, item: Any) -> bool:
        if not isinstance(item, dict):
            return False
        if self.url is not None:
            return bool(item.get("url") == self.url)
        if self.coding is not None:
            system, code = self.coding
            codings = (item.get("code") or {}).get("coding", [])
            return any(c.get("system") == system and c.get("code") == code for c in codings)
        return True

    def new_item(self) -> dict[str, Any]:
        if self.url is not None:
            return {"url": self.url}
        if self.coding is not None:
            return {"code": {"coding": [{"system": self.coding[0], "code": self.coding[1]}]}}
        return {}


class PathError(ValueError):
    pass


@cache
def parse(path: str) -> tuple[Step, ...]:
    steps: list[Step] = []
    for raw in _split(path):
        m = _STEP.match(raw)
        if not m:
            raise PathError(f"bad path step {raw!r} in {path!r}")
        name, index, selector = m.group("name"), m.group("index"), m.group("selector")
        every = index == "*"
        position = int(index) if index is not None and not every else None
        if selector is None:
            steps.append(Step(name, index=position, every=every))
        elif name == "extension" or name == "modifierExtension":
            steps.append(Step(name, index=position, url=selector, every=every))
        else:
            system, sep, code = selector.rpartition("|")
            if not sep:
                raise PathError(f"selector of {raw!r} must be <system>|<code>")
            steps.append(Step(name, index=position, coding=(system, code), every=every))
    if sum(step.every for step in steps) > 1:
        raise PathError(f"at most one [*] step in {path!r}")
    return tuple(steps)


def _split(path: str) -> list[str]:
    """Split on dots outside parentheses (URLs in selectors contain dots)."""
    parts: list[str] = []
    depth = 0
    current = ""
    for ch in path:
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        if ch == "." and depth == 0:
            parts.append(current)
            current = ""
        else:
            current += ch
    parts.append(current)
    return parts


def get(resource: dict[str, Any], path: str) -> Any:
    node: Any = resource
    for step in parse(path):
        if not isinstance(node, dict) or step.name not in node:
            return None
        node = node[step.name]
        if isinstance(node, list):
            node = _pick(node, step)
            if node is None:
                return None
        elif step.is_list:
            return None
    return node


def _pick(items: list[Any], step: Step) -> Any:
    if step.every:
        raise PathError(f"{step.name}[*] needs get_all/put_all")
    position = step.index or 0
    if not step.is_slice:
        return items[position] if position < len(items) else None
    for item in items:  # the position-th item of the slice
        if step.matches(item):
            if not position:
                return item
            position -= 1
    return None


def put(resource: dict[str, Any], path: str, value: Any) -> None:
    """Set ``value`` at ``path``, creating intermediate elements and slices."""
    head, last = _put_steps(path)
    node: dict[str, Any] = resource
    for step in head:
        if step.is_list:
            node = _item(node, step)
            continue
        child = node.setdefault(step.name, {})
        if isinstance(child, list):  # a plain step into a list means its first item
            if not child:
                child.append({})
            child = child[0]
        node = child
    if not last.is_list:
        node[last.name] = value
        return
    target = _item(node, last)
    if not isinstance(value, dict):
        raise PathError(f"{path}: a list item can only be set to an object")
    target.update(value)


@cache
def _put_steps(path: str) -> tuple[tuple[Step, ...], Step]:
    """The steps up to the last, and the last (``put`` runs for every element of every resource)."""
    steps = parse(path)
    return steps[:-1], steps[-1]


def _item(node: dict[str, Any], step: Step) -> Any:
    """The list item ``step`` selects under ``node``, created (with its slice discriminator) if missing."""
    items: list[Any] = node.setdefault(step.name, [])
    target = _pick(items, step)
    if target is None:
        if step.is_slice:
            while target is None:
                items.append(step.new_item())
                target = _pick(items, step)
        elif step.index is not None:
            while len(items) <= step.index:
                items.append({})
            target = items[step.index]
        else:
            target = {}
            items.append(target)
    return target


def _split_every(path: str) -> tuple[str, Step, str]:
    raw = _split(path)
    steps = parse(path)
    for i, step in enumerate(steps):
        if step.every:
            return ".".join(raw[:i]), step, ".".join(raw[i + 1 :])
    raise PathError(f"{path!r} has no [*] step")


def has_every(path: str) -> bool:
    return any(step.every for step in parse(path))


def get_all(resource: dict[str, Any], path: str) -> list[Any]:
    """Every value at a path with one ``[*]`` step (items missing the rest of the path are skipped)."""
    head, step, tail = _split_every(path)
    parent = get(resource, head) if head else resource
    if not isinstance(parent, dict):
        return []
    items = parent.get(step.name)
    if not isinstance(items, list):
        return []
    out = []
    for item in items:
        if not step.matches(item) and step.is_slice:
            continue
        value = get(item, tail) if tail else item
        if value is not None:
            out.append(value)
    return out


def put_all(resource: dict[str, Any], path: str, values: list[Any]) -> None:
    """Append one list item per value at the ``[*]`` step, each with the rest of the path set."""
    head, step, tail = _split_every(path)
    parent: Any = resource
    if head:
        if get(resource, head) is None:
            put(resource, head, {})
        parent = get(resource, head)
    items: list[Any] = parent.setdefault(step.name, [])
    for value in values:
        if tail:
            item = step.new_item()
            put(item, tail, value)
            items.append(item)
        else:
            if step.is_slice:
                raise PathError(f"{path}: a slice item needs an element after [*]")
            items.append(value)
