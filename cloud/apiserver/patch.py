"""The three PATCH flavours the API server accepts, applied to plain JSON-shaped dicts.

- `merge_patch`: RFC 7386 JSON merge patch (application/merge-patch+json).
- `json_patch`: RFC 6902 JSON patch (application/json-patch+json).
- `strategic_merge_patch`: Kubernetes' strategic merge patch
  (application/strategic-merge-patch+json), the body `kubectl apply` and `kubectl patch` send
  for built-in kinds. Which lists merge, and by which key, comes from
  `ResourceInfo.merge_keys` (dotted field path, list items transparent -> merge key; "" for a
  list of primitives merged as a set); every other list is replaced wholesale.

Every function is pure: inputs are never mutated and the result shares no containers with
them. Problems with a patch raise `PatchError`, whose message says what is wrong; the server
answers 422 for it. Parsing the request body, the content-type dispatch and server-side apply
(application/apply-patch+yaml) are not here; neither is a schema: types and field names are
not validated.

Where Kubernetes' behaviour is a quirk of its Go implementation, the plain reading wins: a map
carrying `$patch: delete` removes its key (Kubernetes leaves `{}`), values new to the object
are cleaned of directives and nulls (Kubernetes copies them verbatim), and without
`$setElementOrder` new items of a merged list are appended in patch order (Kubernetes slots
them by their place in the patch, so a patch of only new items puts them first). With
`$setElementOrder` the order is Kubernetes' own, see `_Strategic._reorder`.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Callable
from typing import Any

__all__ = ["PatchError", "json_patch", "merge_patch", "strategic_merge_patch"]


class PatchError(Exception):
    """The patch cannot be applied to this object; the message says why."""


# --- RFC 7386 JSON merge patch -----------------------------------------------------------


def merge_patch(original: dict[str, Any], patch: Any) -> dict[str, Any]:
    """Apply an RFC 7386 merge patch: objects merge recursively, null deletes, all else replaces."""
    if not isinstance(patch, dict):
        raise PatchError("a JSON merge patch for an object must itself be a JSON object")
    result: dict[str, Any] = _merge_json(copy.deepcopy(original), patch)
    return result


def _merge_json(target: Any, patch: Any) -> Any:
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    out = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            out.pop(key, None)
        else:
            out[key] = _merge_json(out.get(key), value)
    return out


# --- RFC 6902 JSON patch -----------------------------------------------------------------


def json_patch(original: dict[str, Any], ops: list[Any]) -> dict[str, Any]:
    """Apply RFC 6902 operations in order; any failure aborts the whole patch."""
    if not isinstance(ops, list):
        raise PatchError("a JSON patch must be a JSON array of operations")
    doc: Any = copy.deepcopy(original)  # the working copy is ours to mutate
    for number, op in enumerate(ops):
        doc = _apply_op(doc, op, number)
    if not isinstance(doc, dict):
        raise PatchError("the patched document is not a JSON object")
    return doc


def _apply_op(doc: Any, op: Any, number: int) -> Any:
    if not isinstance(op, dict):
        raise PatchError(f"operation {number}: not a JSON object")
    name = op.get("op")
    handler = _OPERATIONS.get(name) if isinstance(name, str) else None
    if handler is None:
        raise PatchError(f"operation {number}: unknown op {name!r}")
    try:
        return handler(doc, op)
    except PatchError as exc:
        raise PatchError(f"operation {number} ({name} {op.get('path')!r}): {exc}") from None


def _member(op: dict[str, Any], name: str) -> Any:
    if name not in op:
        raise PatchError(f"missing member {name!r}")
    return op[name]


def _op_add(doc: Any, op: dict[str, Any]) -> Any:
    return _add(doc, _pointer(_member(op, "path")), copy.deepcopy(_member(op, "value")))


def _op_remove(doc: Any, op: dict[str, Any]) -> Any:
    tokens = _pointer(_member(op, "path"))
    if not tokens:
        raise PatchError("cannot remove the whole document")
    _remove(doc, tokens)
    return doc


def _op_replace(doc: Any, op: dict[str, Any]) -> Any:
    tokens = _pointer(_member(op, "path"))
    value = copy.deepcopy(_member(op, "value"))
    if not tokens:
        return value
    parent, last = _resolve(doc, tokens[:-1]), tokens[-1]
    if isinstance(parent, dict) and last not in parent:
        raise PatchError(f"no member {last!r} to replace")
    parent[_slot(parent, last, for_add=False)] = value
    return doc


def _op_move(doc: Any, op: dict[str, Any]) -> Any:
    source, target = _pointer(_member(op, "from")), _pointer(_member(op, "path"))
    if len(source) < len(target) and target[: len(source)] == source:
        raise PatchError("cannot move a value into one of its own children")
    if source == target:
        _resolve(doc, source)  # still has to exist
        return doc
    return _add(doc, target, _remove(doc, source))


def _op_copy(doc: Any, op: dict[str, Any]) -> Any:
    value = copy.deepcopy(_resolve(doc, _pointer(_member(op, "from"))))
    return _add(doc, _pointer(_member(op, "path")), value)


def _op_test(doc: Any, op: dict[str, Any]) -> Any:
    if not _json_equal(_resolve(doc, _pointer(_member(op, "path"))), _member(op, "value")):
        raise PatchError("test failed: the value differs")
    return doc


_OPERATIONS: dict[str, Callable[[Any, dict[str, Any]], Any]] = {
    "add": _op_add,
    "remove": _op_remove,
    "replace": _op_replace,
    "move": _op_move,
    "copy": _op_copy,
    "test": _op_test,
}

_BAD_ESCAPE = re.compile(r"~(?![01])")
_ARRAY_INDEX = re.compile(r"0|[1-9][0-9]*")


def _pointer(pointer: Any) -> list[str]:
    """RFC 6901: "" is the whole document, else "/"-separated tokens with ~1 -> / and ~0 -> ~."""
    if not isinstance(pointer, str):
        raise PatchError(f"JSON pointer {pointer!r} is not a string")
    if pointer == "":
        return []
    if not pointer.startswith("/"):
        raise PatchError(f"JSON pointer {pointer!r} must start with '/'")
    if _BAD_ESCAPE.search(pointer):
        raise PatchError(f"JSON pointer {pointer!r} has a '~' not followed by 0 or 1")
    return [t.replace("~1", "/").replace("~0", "~") for t in pointer[1:].split("/")]


def _resolve(doc: Any, tokens: list[str]) -> Any:
    for token in tokens:
        if isinstance(doc, dict) and token not in doc:
            raise PatchError(f"path member {token!r} does not exist")
        if not isinstance(doc, dict | list):
            raise PatchError(f"cannot look up {token!r} inside a {type(doc).__name__}")
        doc = doc[_slot(doc, token, for_add=False)]
    return doc


def _slot(container: Any, token: str, *, for_add: bool) -> Any:
    """The dict key or list index `token` names; "-" (one past the end) only when adding."""
    if isinstance(container, dict):
        return token
    if not isinstance(container, list):
        raise PatchError(f"cannot address {token!r} inside a {type(container).__name__}")
    if for_add and token == "-":
        return len(container)
    if not _ARRAY_INDEX.fullmatch(token):
        raise PatchError(f"{token!r} is not an array index")
    index, size = int(token), len(container)
    if index > size or (index == size and not for_add):
        raise PatchError(f"array index {index} is out of range (length {size})")
    return index


def _add(doc: Any, tokens: list[str], value: Any) -> Any:
    if not tokens:
        return value
    parent, last = _resolve(doc, tokens[:-1]), tokens[-1]
    slot = _slot(parent, last, for_add=True)
    if isinstance(parent, list):
        parent.insert(slot, value)
    else:
        parent[slot] = value
    return doc


def _remove(doc: Any, tokens: list[str]) -> Any:
    parent, last = _resolve(doc, tokens[:-1]), tokens[-1]
    if isinstance(parent, dict) and last not in parent:
        raise PatchError(f"no member {last!r} to remove")
    return parent.pop(_slot(parent, last, for_add=False))


def _json_equal(left: Any, right: Any) -> bool:
    """JSON value equality: numbers compare by value, but booleans are not numbers."""
    if isinstance(left, bool) or isinstance(right, bool):
        return left is right
    if isinstance(left, int | float) and isinstance(right, int | float):
        return left == right
    if isinstance(left, dict) and isinstance(right, dict):
        return left.keys() == right.keys() and all(_json_equal(left[k], right[k]) for k in left)
    if isinstance(left, list) and isinstance(right, list):
        return len(left) == len(right) and all(map(_json_equal, left, right))
    return type(left) is type(right) and bool(left == right)


# --- Kubernetes strategic merge patch ----------------------------------------------------

_PATCH = "$patch"
_RETAIN_KEYS = "$retainKeys"
_SET_ORDER = "$setElementOrder/"
_DELETE_FROM = "$deleteFromPrimitiveList/"
_MISSING: Any = object()  # "no such key", distinct from a JSON null


def strategic_merge_patch(
    original: dict[str, Any], patch: dict[str, Any], merge_keys: dict[str, str]
) -> dict[str, Any]:
    """Apply a Kubernetes strategic merge patch; `merge_keys` is the kind's ResourceInfo one."""
    if not isinstance(patch, dict):
        raise PatchError("a strategic merge patch must be a JSON object")
    result = _Strategic(merge_keys).merge_map(copy.deepcopy(original), patch, "")
    return {} if result is None else result


class _Strategic:
    """One patch application; holds the merge keys so the recursion need not pass them."""

    def __init__(self, merge_keys: dict[str, str]) -> None:
        self.merge_keys = merge_keys

    def merge_map(
        self, orig: dict[str, Any], patch: dict[str, Any], path: str
    ) -> dict[str, Any] | None:
        """The merged map, or None when the patch says `$patch: delete`."""
        if _PATCH not in patch:
            return self.merge_fields(orig, patch, path)
        directive = patch[_PATCH]
        if directive == "delete":
            return None
        if directive == "replace":
            rest = {k: v for k, v in patch.items() if k != _PATCH}
            return self.merge_fields({}, rest, path)
        raise PatchError(f"{_where(path)}: unknown $patch directive {directive!r} for a map")

    def merge_fields(
        self, orig: dict[str, Any], patch: dict[str, Any], path: str
    ) -> dict[str, Any]:
        out = _retain_keys(orig, patch, path)
        for name in _patched_fields(patch, path):
            value = self._field(out.get(name, _MISSING), patch, name, _join(path, name))
            if value is _MISSING:
                out.pop(name, None)
            else:
                out[name] = value
        return out

    def _field(self, current: Any, patch: dict[str, Any], name: str, path: str) -> Any:
        """One field of a map after its deletions, its patch value and its ordering."""
        value = current
        if _DELETE_FROM + name in patch:
            value = _delete_values(value, patch[_DELETE_FROM + name], path)
        if name in patch:
            new = patch[name]
            value = _MISSING if new is None else self.merge_value(value, new, path)
        if _SET_ORDER + name in patch:
            value = self._reorder(value, patch[_SET_ORDER + name], current, patch.get(name), path)
        return value

    def merge_value(self, orig: Any, patch: Any, path: str) -> Any:
        """`patch` merged onto `orig` (which may be _MISSING); _MISSING when deleted."""
        if isinstance(patch, dict):
            merged = self.merge_map(orig if isinstance(orig, dict) else {}, patch, path)
            return _MISSING if merged is None else merged
        if isinstance(patch, list):
            return self.merge_list(orig if isinstance(orig, list) else [], patch, path)
        return patch

    def merge_list(self, orig: list[Any], patch: list[Any], path: str) -> list[Any]:
        key = self.merge_keys.get(path)
        if key is None:
            return self._replace_list(patch, path)
        if key == "":
            return _union(orig, patch, path)
        return self._merge_keyed(orig, patch, key, path)

    def _replace_list(self, patch: list[Any], path: str) -> list[Any]:
        # An unkeyed list is replaced anyway, so a `$patch: replace` item only goes away.
        values = (self.merge_value(_MISSING, item, path) for item in patch if not _is_replace(item))
        return [v for v in values if v is not _MISSING]

    def _merge_keyed(self, orig: list[Any], patch: list[Any], key: str, path: str) -> list[Any]:
        """Delete items first, then update items in place or append them (as Kubernetes does)."""
        items = _keyed_items(patch, key, path)
        base = [] if any(_is_replace(i) for i in items) else list(orig)
        for item in items:
            if item.get(_PATCH) == "delete":
                base = [x for x in base if not _has_key(x, key, item[key])]
        for item in items:
            if _PATCH not in item:
                base = self._upsert(base, item, key, path)
        return base

    def _upsert(self, base: list[Any], item: dict[str, Any], key: str, path: str) -> list[Any]:
        for index, existing in enumerate(base):
            if _has_key(existing, key, item[key]):
                merged = self.merge_fields(existing, item, path)
                return [*base[:index], merged, *base[index + 1 :]]
        return [*base, self.merge_fields({}, item, path)]

    def _reorder(self, value: Any, order: Any, live: Any, patch_list: Any, path: str) -> Any:
        """Apply `$setElementOrder`, the way Kubernetes' normalizeElementOrder does.

        Items named in the order list come in that order. The other (server-only) items keep
        their live relative order and are interleaved: one goes before an ordered item when
        both were in the live list and it came first there; an ordered item that is new
        comes before the server-only items still waiting.
        """
        if not isinstance(order, list):
            raise PatchError(f"{_where(path)}: $setElementOrder takes a list")
        key = self.merge_keys.get(path)
        if key is None or not isinstance(value, list):
            return value  # only merged lists have an order to set
        order_ids = [_order_id(o, key, path) for o in order]
        _check_patch_order(patch_list if isinstance(patch_list, list) else [], order_ids, key, path)
        live_ids = [_identity(x, key) for x in live] if isinstance(live, list) else []

        def order_rank(item: Any) -> int:
            return _position(order_ids, _identity(item, key))

        def live_rank(item: Any) -> int:
            return _position(live_ids, _identity(item, key))

        named = sorted((x for x in value if order_rank(x) < len(order_ids)), key=order_rank)
        others = sorted((x for x in value if order_rank(x) == len(order_ids)), key=live_rank)
        return _interleave(others, named, live_rank, len(live_ids))


def _interleave(
    others: list[Any], named: list[Any], live_rank: Callable[[Any], int], unknown: int
) -> list[Any]:
    """Merge two ordered lists, taking `others` first only where the live list says so."""
    out: list[Any] = []
    i = j = 0
    while i < len(others) and j < len(named):
        if live_rank(others[i]) < live_rank(named[j]) < unknown:
            out.append(others[i])
            i += 1
        else:
            out.append(named[j])
            j += 1
    return out + others[i:] + named[j:]


def _patched_fields(patch: dict[str, Any], path: str) -> list[str]:
    """The field names a map patch touches, directly or through a `$...` directive."""
    names: list[str] = []
    for key in patch:
        if key in (_PATCH, _RETAIN_KEYS):
            continue
        name = _directive_field(key, path) if key.startswith("$") else key
        if name not in names:
            names.append(name)
    return names


def _directive_field(key: str, path: str) -> str:
    for prefix in (_SET_ORDER, _DELETE_FROM):
        if key.startswith(prefix) and len(key) > len(prefix):
            return key[len(prefix) :]
    raise PatchError(f"{_where(path)}: unknown directive {key!r}")


def _retain_keys(orig: dict[str, Any], patch: dict[str, Any], path: str) -> dict[str, Any]:
    """A copy of `orig`, without the keys a `$retainKeys` list does not name."""
    if _RETAIN_KEYS not in patch:
        return dict(orig)
    keep = patch[_RETAIN_KEYS]
    if not isinstance(keep, list) or not all(isinstance(k, str) for k in keep):
        raise PatchError(f"{_where(path)}: $retainKeys takes a list of field names")
    stray = [k for k, v in patch.items() if v is not None and k[:1] != "$" and k not in keep]
    if stray:
        raise PatchError(f"{_where(path)}: fields {stray} are patched but not in $retainKeys")
    return {k: v for k, v in orig.items() if k in keep}


def _delete_values(value: Any, doomed: Any, path: str) -> Any:
    if not isinstance(doomed, list):
        raise PatchError(f"{_where(path)}: $deleteFromPrimitiveList takes a list")
    if not isinstance(value, list):
        return value
    return [v for v in value if not any(_json_equal(v, d) for d in doomed)]


def _union(orig: list[Any], patch: list[Any], path: str) -> list[Any]:
    if any(isinstance(v, dict | list) for v in patch):
        raise PatchError(f"{_where(path)}: this list is merged as a set and takes plain values")
    out: list[Any] = []
    for value in [*orig, *patch]:
        if not any(_json_equal(value, seen) for seen in out):
            out.append(value)
    return out


def _keyed_items(patch: list[Any], key: str, path: str) -> list[dict[str, Any]]:
    """The items of a patch for a list merged by `key`, checked."""
    for item in patch:
        if not isinstance(item, dict):
            raise PatchError(f"{_where(path)}: items are merged by {key!r} and must be objects")
        if _PATCH in item and item[_PATCH] not in ("delete", "replace"):
            raise PatchError(f"{_where(path)}: unknown $patch directive {item[_PATCH]!r}")
        if key not in item and not _is_replace(item):
            raise PatchError(f"{_where(path)}: an item lacks its merge key {key!r}")
    return patch


def _check_patch_order(patch_list: list[Any], order_ids: list[Any], key: str, path: str) -> None:
    """Patch items must appear in `$setElementOrder`, in the same relative order."""
    remaining = iter(order_ids)
    for item in patch_list:
        if isinstance(item, dict) and _PATCH in item:
            continue
        wanted = _identity(item, key)
        if not any(_json_equal(wanted, o) for o in remaining):
            raise PatchError(
                f"{_where(path)}: the patch list does not follow its $setElementOrder list"
            )


def _order_id(entry: Any, key: str, path: str) -> Any:
    found = _identity(entry, key)
    if found is _MISSING:
        raise PatchError(f"{_where(path)}: a $setElementOrder entry lacks the key {key!r}")
    return found


def _identity(item: Any, key: str) -> Any:
    """What identifies a list item: its merge key value, or itself in a set of primitives."""
    if not key:
        return item
    return item.get(key, _MISSING) if isinstance(item, dict) else _MISSING


def _position(ids: list[Any], wanted: Any) -> int:
    """Where `wanted` is in `ids`; len(ids) when it is not there."""
    found = (i for i, x in enumerate(ids) if wanted is not _MISSING and _json_equal(x, wanted))
    return next(found, len(ids))


def _has_key(item: Any, key: str, value: Any) -> bool:
    return isinstance(item, dict) and key in item and _json_equal(item[key], value)


def _is_replace(item: Any) -> bool:
    return isinstance(item, dict) and item.get(_PATCH) == "replace"


def _join(path: str, name: str) -> str:
    return f"{path}.{name}" if path else name


def _where(path: str) -> str:
    return path or "the object"
