"""Label and field selectors, parsed as the Kubernetes API server parses them.

`parse_label_selector` reads the `labelSelector` query parameter (`app=web,tier in (a,b),!legacy`)
and `parse_field_selector` reads `fieldSelector` (`spec.nodeName=edge-1,status.phase!=Failed`);
each returns a predicate the list and watch handlers apply to stored objects. Bad input raises
SelectorError, which the HTTP layer answers with 400 BadRequest.

What this does not do: index anything (every object is tested), or restrict field selectors to
the fields each kind registers: any dotted path is resolved on the object and a missing field
reads as "", so `spec.nodeName=` finds unscheduled pods as it does in Kubernetes.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

__all__ = ["SelectorError", "parse_field_selector", "parse_label_selector"]


class SelectorError(Exception):
    """A label or field selector that does not parse or names an invalid key or value."""


LabelPredicate = Callable[[dict[str, str]], bool]
FieldPredicate = Callable[[dict[str, Any]], bool]

# --- label selectors ---------------------------------------------------------------------------

_NAME = re.compile(r"([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]")
_DNS_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
_SPECIAL = "=!(),<>"
_TWO_CHAR_OPS = ("==", "!=")

# Token kinds.
_IDENT, _OP, _LPAREN, _RPAREN, _COMMA, _END = "identifier", "op", "(", ")", ",", "end"
_SET_OPS = ("in", "notin")


@dataclass(frozen=True)
class _Token:
    kind: str
    text: str

    def shown(self) -> str:
        return "end of string" if self.kind == _END else self.text


def _lex(text: str) -> list[_Token]:
    tokens, i = [], 0
    while i < len(text):
        ch = text[i]
        if ch.isspace():
            i += 1
        elif ch in "(),":
            tokens.append(_Token(ch, ch))
            i += 1
        elif ch in _SPECIAL:
            op = text[i : i + 2] if text[i : i + 2] in _TWO_CHAR_OPS else ch
            tokens.append(_Token(_OP, op))
            i += len(op)
        else:
            start = i
            while i < len(text) and not text[i].isspace() and text[i] not in _SPECIAL:
                i += 1
            tokens.append(_Token(_IDENT, text[start:i]))
    tokens.append(_Token(_END, ""))
    return tokens


@dataclass(frozen=True)
class _Requirement:
    key: str
    op: str  # "=", "!=", "in", "notin", "exists", "!", ">", "<"
    values: frozenset[str]

    def matches(self, labels: dict[str, str]) -> bool:
        present = self.key in labels
        value = labels.get(self.key, "")
        if self.op in ("=", "in"):
            return present and value in self.values
        if self.op in ("!=", "notin"):
            return not present or value not in self.values
        if self.op == "exists":
            return present
        if self.op == "!":
            return not present
        return present and _compare(value, self.op, next(iter(self.values)))


def _compare(label_value: str, op: str, bound: str) -> bool:
    try:
        number = int(label_value)
    except ValueError:
        return False
    return number > int(bound) if op == ">" else number < int(bound)


def validate_label_key(key: str) -> None:
    """Raise SelectorError unless `key` is a qualified name: [DNS-subdomain '/'] name."""
    prefix, slash, name = key.rpartition("/")
    if slash and (not prefix or "/" in prefix):
        raise SelectorError(f"invalid label key {key!r}: prefix must be a non-empty DNS subdomain")
    if prefix and (len(prefix) > 253 or not _DNS_SUBDOMAIN.fullmatch(prefix)):
        raise SelectorError(
            f"invalid label key {key!r}: prefix must be a lowercase DNS subdomain (<= 253 chars)"
        )
    if not name or len(name) > 63 or not _NAME.fullmatch(name):
        raise SelectorError(
            f"invalid label key {key!r}: name part must be 1-63 characters of [A-Za-z0-9._-], "
            "starting and ending with an alphanumeric character"
        )


def validate_label_value(value: str) -> None:
    """Raise SelectorError unless `value` is empty or a valid label value."""
    if value and (len(value) > 63 or not _NAME.fullmatch(value)):
        raise SelectorError(
            f"invalid label value {value!r}: must be empty or up to 63 characters of "
            "[A-Za-z0-9._-], starting and ending with an alphanumeric character"
        )


class _LabelParser:
    def __init__(self, text: str) -> None:
        self._tokens = _lex(text)
        self._pos = 0

    def _peek(self) -> _Token:
        return self._tokens[self._pos]

    def _take(self) -> _Token:
        token = self._tokens[self._pos]
        self._pos = min(self._pos + 1, len(self._tokens) - 1)
        return token

    def parse(self) -> list[_Requirement]:
        requirements: list[_Requirement] = []
        if self._peek().kind == _END:
            return requirements
        while True:
            requirements.append(self._requirement())
            token = self._take()
            if token.kind == _END:
                return requirements
            if token.kind != _COMMA:
                raise SelectorError(f"found {token.shown()!r}, expected: ',' or end of string")

    def _requirement(self) -> _Requirement:
        negated = self._peek() == _Token(_OP, "!")
        if negated:
            self._take()
        key = self._key()
        if negated:
            return _Requirement(key, "!", frozenset())
        if self._peek().kind in (_COMMA, _END):
            return _Requirement(key, "exists", frozenset())
        op = self._operator()
        values = self._set_values() if op in _SET_OPS else self._single_value(op)
        for value in values:
            validate_label_value(value)
        return _Requirement(key, op, values)

    def _key(self) -> str:
        token = self._take()
        if token.kind != _IDENT or token.text in _SET_OPS:
            raise SelectorError(f"found {token.shown()!r}, expected: identifier (a label key)")
        validate_label_key(token.text)
        return token.text

    def _operator(self) -> str:
        token = self._take()
        if token.kind == _OP and token.text in ("=", "==", "!=", ">", "<"):
            return "=" if token.text == "==" else token.text
        if token.kind == _IDENT and token.text in _SET_OPS:
            return token.text
        raise SelectorError(f"found {token.shown()!r}, expected one of: in, notin, =, ==, !=, >, <")

    def _single_value(self, op: str) -> frozenset[str]:
        if self._peek().kind in (_COMMA, _END):
            value = ""  # `k=` selects an empty value, as in Kubernetes
        else:
            token = self._take()
            if token.kind != _IDENT:
                raise SelectorError(f"found {token.shown()!r}, expected: a value after {op!r}")
            value = token.text
        if op in (">", "<") and not re.fullmatch(r"[0-9]+", value):
            raise SelectorError(f"for '>' and '<' the value must be an integer, got {value!r}")
        return frozenset({value})

    def _set_values(self) -> frozenset[str]:
        token = self._take()
        if token.kind != _LPAREN:
            raise SelectorError(f"found {token.shown()!r}, expected: '('")
        values: set[str] = set()
        expect_value = True
        while True:
            token = self._take()
            if token.kind == _RPAREN:
                if expect_value:
                    values.add("")  # `()` and `(a,)` hold an empty value, as in Kubernetes
                return frozenset(values)
            if token.kind == _COMMA:
                if expect_value:
                    values.add("")
                expect_value = True
            elif token.kind == _IDENT and expect_value:
                values.add(token.text)
                expect_value = False
            else:
                raise SelectorError(f"found {token.shown()!r}, expected: ',', ')' or a value")


def parse_label_selector(text: str) -> LabelPredicate:
    """A predicate over an object's labels; the empty selector matches everything."""
    requirements = _LabelParser(text or "").parse()

    def matches(labels: dict[str, str]) -> bool:
        labels = labels or {}
        return all(r.matches(labels) for r in requirements)

    return matches


# --- field selectors ---------------------------------------------------------------------------

_FIELD_PATH = re.compile(r"[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*")
_FIELD_OPS = ("!=", "==", "=")  # tried in this order at each position, as Kubernetes does


def _split_unescaped_commas(text: str) -> Iterator[str]:
    start, escaped = 0, False
    for i, ch in enumerate(text):
        if escaped:
            escaped = False
        elif ch == "\\":
            escaped = True
        elif ch == ",":
            yield text[start:i]
            start = i + 1
    yield text[start:]


def _unescape(value: str) -> str:
    out, escaped = [], False
    for ch in value:
        if escaped:
            if ch not in "\\,=":
                raise SelectorError(f"invalid escape sequence '\\{ch}' in field selector value")
            out.append(ch)
            escaped = False
        elif ch == "\\":
            escaped = True
        elif ch in ",=":
            raise SelectorError(f"unescaped {ch!r} in field selector value {value!r}")
        else:
            out.append(ch)
    if escaped:
        raise SelectorError(f"field selector value {value!r} ends with a lone backslash")
    return "".join(out)


def _split_term(term: str, whole: str) -> tuple[str, bool, str]:
    """(path, negated, value) of one `path<op>value` term."""
    for i in range(len(term)):
        for op in _FIELD_OPS:
            if term.startswith(op, i):
                path = term[:i].strip()
                if not _FIELD_PATH.fullmatch(path):
                    raise SelectorError(f"invalid field selector {whole!r}: bad field {path!r}")
                return path, op == "!=", _unescape(term[i + len(op) :].strip())
    raise SelectorError(f"invalid field selector {whole!r}: can't understand {term!r}")


def field_value(obj: dict[str, Any], path: str) -> str:
    """The text of the field at a dotted path; "" when any part of the path is missing."""
    current: Any = obj
    for part in path.split("."):
        if not isinstance(current, dict) or current.get(part) is None:
            return ""
        current = current[part]
    if isinstance(current, bool):
        return "true" if current else "false"
    if isinstance(current, str | int | float):
        return str(current)
    return ""


def parse_field_selector(text: str) -> FieldPredicate:
    """A predicate over a whole object; the empty selector matches everything."""
    terms = [_split_term(t, text) for t in _split_unescaped_commas(text or "") if t.strip()]

    def matches(obj: dict[str, Any]) -> bool:
        return all((field_value(obj, path) == value) != negated for path, negated, value in terms)

    return matches
