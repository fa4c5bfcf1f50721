"""Label and field selectors: the Kubernetes grammar, matching rules and rejected input."""

from __future__ import annotations

from typing import Any

import pytest

from cloud.apiserver.selectors import SelectorError, parse_field_selector, parse_label_selector

LABELS = {"app": "web", "tier": "front", "example.com/role": "edge", "empty": "", "replicas": "3"}


@pytest.mark.parametrize(
    ("selector", "expected"),
    [
        pytest.param("", True, id="empty-matches-all"),
        pytest.param("   ", True, id="blank-matches-all"),
        pytest.param("app=web", True, id="eq"),
        pytest.param("app==web", True, id="double-eq"),
        pytest.param("app=db", False, id="eq-other-value"),
        pytest.param("missing=web", False, id="eq-absent"),
        pytest.param("app!=db", True, id="neq"),
        pytest.param("app!=web", False, id="neq-same-value"),
        pytest.param("missing!=web", True, id="neq-absent-matches"),
        pytest.param("tier in (front,back)", True, id="in"),
        pytest.param("tier in (back)", False, id="in-miss"),
        pytest.param("missing in (a,b)", False, id="in-absent"),
        pytest.param("tier notin (back)", True, id="notin"),
        pytest.param("tier notin (front,back)", False, id="notin-miss"),
        pytest.param("missing notin (a)", True, id="notin-absent-matches"),
        pytest.param("app", True, id="exists"),
        pytest.param("missing", False, id="exists-absent"),
        pytest.param("!missing", True, id="not-exists"),
        pytest.param("!app", False, id="not-exists-present"),
        pytest.param("app=web,tier=front", True, id="and-both"),
        pytest.param("app=web,tier=back", False, id="and-one-fails"),
        pytest.param("  app = web ,  tier  in  ( front , back ) , ! missing ", True, id="spaces"),
        pytest.param("example.com/role=edge", True, id="prefixed-key"),
        pytest.param("empty=", True, id="eq-empty-value"),
        pytest.param("app=", False, id="eq-empty-value-miss"),
        pytest.param("empty in (a,)", True, id="in-trailing-comma-holds-empty"),
        pytest.param("app=in", False, id="keyword-as-value"),
        pytest.param("replicas>2", True, id="gt"),
        pytest.param("replicas<2", False, id="lt"),
        pytest.param("app>2", False, id="gt-non-integer-label"),
        pytest.param("missing<9", False, id="lt-absent"),
        pytest.param("a.b-c_d=x", False, id="dotted-key-is-valid"),
    ],
)
def test_label_selector_matches(selector: str, expected: bool) -> None:
    """Each operator matches as Kubernetes' labels.Parse does, absent labels included."""
    assert parse_label_selector(selector)(LABELS) is expected


def test_label_selector_on_empty_labels() -> None:
    """An object without labels matches only negative and empty requirements."""
    assert parse_label_selector("!app,app!=web,app notin (x)")({}) is True
    assert parse_label_selector("app")({}) is False


@pytest.mark.parametrize(
    "selector",
    [
        pytest.param("app=web,", id="trailing-comma"),
        pytest.param(",app=web", id="leading-comma"),
        pytest.param("app=web,,tier=front", id="double-comma"),
        pytest.param("app=web tier=front", id="missing-comma"),
        pytest.param("=web", id="no-key"),
        pytest.param("!", id="bare-bang"),
        pytest.param("!app=web", id="not-exists-with-value"),
        pytest.param("app foo", id="unknown-operator"),
        pytest.param("app in a", id="in-without-parens"),
        pytest.param("app in (a", id="unclosed-paren"),
        pytest.param("app in (a b)", id="in-missing-comma"),
        pytest.param("app=(a)", id="paren-after-eq"),
        pytest.param("app=a=b", id="two-operators"),
        pytest.param("(app)", id="paren-as-key"),
        pytest.param("-app=x", id="key-starts-non-alnum"),
        pytest.param("app-=x", id="key-ends-non-alnum"),
        pytest.param("a" * 64 + "=x", id="key-too-long"),
        pytest.param("Example.com/role=x", id="uppercase-prefix"),
        pytest.param("/role=x", id="empty-prefix"),
        pytest.param("example.com/=x", id="empty-name"),
        pytest.param("a/b/c=x", id="two-slashes"),
        pytest.param("app=-web", id="value-starts-non-alnum"),
        pytest.param("app=" + "v" * 64, id="value-too-long"),
        pytest.param("app in (ok,-bad)", id="bad-value-in-set"),
        pytest.param("app=we b", id="space-in-value"),
        pytest.param("replicas>x", id="gt-non-integer"),
        pytest.param("in in (a)", id="keyword-as-key"),
    ],
)
def test_label_selector_rejects(selector: str) -> None:
    """Malformed selectors and invalid keys or values raise SelectorError."""
    with pytest.raises(SelectorError):
        parse_label_selector(selector)


def test_label_selector_error_says_what_is_wrong() -> None:
    """The error names the offending token, for the 400 message kubectl prints."""
    with pytest.raises(SelectorError, match="found 'foo'"):
        parse_label_selector("app foo")
    with pytest.raises(SelectorError, match="invalid label key"):
        parse_label_selector("-app=x")


POD: dict[str, Any] = {
    "metadata": {"name": "p1", "namespace": "default", "labels": {"app": "web"}},
    "spec": {"nodeName": "edge-1", "hostNetwork": True, "priority": 5},
    "status": {"phase": "Running"},
}
ODD = {"metadata": {"name": "a,b=c\\d", "namespace": "default"}, "spec": {}}


@pytest.mark.parametrize(
    ("selector", "obj", "expected"),
    [
        pytest.param("", POD, True, id="empty-matches-all"),
        pytest.param("metadata.name=p1", POD, True, id="name-eq"),
        pytest.param("metadata.name==p1", POD, True, id="name-double-eq"),
        pytest.param("metadata.name=p2", POD, False, id="name-other"),
        pytest.param("metadata.name!=p2", POD, True, id="name-neq"),
        pytest.param("metadata.name!=p1", POD, False, id="name-neq-same"),
        pytest.param("metadata.namespace=default", POD, True, id="namespace"),
        pytest.param("spec.nodeName=edge-1", POD, True, id="node-name"),
        pytest.param("spec.nodeName=", ODD, True, id="unscheduled-node-name-empty"),
        pytest.param("spec.nodeName!=", POD, True, id="scheduled-node-name-not-empty"),
        pytest.param("status.phase=Running", POD, True, id="phase"),
        pytest.param("status.phase!=Running", POD, False, id="phase-neq"),
        pytest.param("status.phase=Running,spec.nodeName=edge-2", POD, False, id="and"),
        pytest.param("metadata.namespace=default,status.phase=Running", POD, True, id="and-2"),
        pytest.param("status.reason=", POD, True, id="missing-path-is-empty"),
        pytest.param("spec.hostNetwork=true", POD, True, id="generic-bool"),
        pytest.param("spec.priority=5", POD, True, id="generic-int"),
        pytest.param("spec.nodeName.deeper=", POD, True, id="path-through-scalar"),
        pytest.param(r"metadata.name=a\,b\=c\\d", ODD, True, id="escaped-value"),
        pytest.param(" metadata.name = p1 ", POD, True, id="spaces"),
        pytest.param("metadata.name=p1,", POD, True, id="empty-term-skipped"),
    ],
)
def test_field_selector_matches(selector: str, obj: dict[str, Any], expected: bool) -> None:
    """Field selectors compare the text at a dotted path; missing fields read as ""."""
    assert parse_field_selector(selector)(obj) is expected


@pytest.mark.parametrize(
    "selector",
    [
        pytest.param("metadata.name", id="no-operator"),
        pytest.param("=p1", id="no-field"),
        pytest.param("metadata..name=p1", id="empty-path-segment"),
        pytest.param("metadata name=p1", id="space-in-field"),
        pytest.param("metadata.name=a=b", id="unescaped-equals"),
        pytest.param(r"metadata.name=a\x", id="unknown-escape"),
        pytest.param("metadata.name=a\\", id="trailing-backslash"),
        pytest.param("metadata.name in (a)", id="set-operator"),
    ],
)
def test_field_selector_rejects(selector: str) -> None:
    """Malformed field selectors raise SelectorError."""
    with pytest.raises(SelectorError):
        parse_field_selector(selector)
