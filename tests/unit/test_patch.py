"""PATCH bodies: RFC 7386 merge patch, RFC 6902 JSON patch, Kubernetes strategic merge patch."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from cloud.apiserver.patch import PatchError, json_patch, merge_patch, strategic_merge_patch
from cloud.apiserver.resources import POD_KEYS

# --- RFC 7386 ----------------------------------------------------------------------------

# RFC 7386 appendix A. Cases whose document or patch is not an object are wrapped under "x",
# since a resource is always an object.
MERGE_CASES = [
    pytest.param({"a": "b"}, {"a": "c"}, {"a": "c"}, id="replace-member"),
    pytest.param({"a": "b"}, {"b": "c"}, {"a": "b", "b": "c"}, id="add-member"),
    pytest.param({"a": "b"}, {"a": None}, {}, id="null-deletes"),
    pytest.param({"a": "b", "b": "c"}, {"a": None}, {"b": "c"}, id="null-deletes-one"),
    pytest.param({"a": ["b"]}, {"a": "c"}, {"a": "c"}, id="list-to-scalar"),
    pytest.param({"a": "c"}, {"a": ["b"]}, {"a": ["b"]}, id="scalar-to-list"),
    pytest.param(
        {"a": {"b": "c"}}, {"a": {"b": "d", "c": None}}, {"a": {"b": "d"}}, id="nested-merge"
    ),
    pytest.param({"a": [{"b": "c"}]}, {"a": [1]}, {"a": [1]}, id="lists-replaced"),
    pytest.param({"x": ["a", "b"]}, {"x": ["c", "d"]}, {"x": ["c", "d"]}, id="list-for-list"),
    pytest.param({"x": {"a": "b"}}, {"x": ["c"]}, {"x": ["c"]}, id="object-to-list"),
    pytest.param({"x": {"a": "foo"}}, {"x": "bar"}, {"x": "bar"}, id="object-to-string"),
    pytest.param({"e": None}, {"a": 1}, {"e": None, "a": 1}, id="existing-null-kept"),
    pytest.param({"x": [1, 2]}, {"x": {"a": "b", "c": None}}, {"x": {"a": "b"}}, id="list-to-obj"),
    pytest.param({}, {"a": {"bb": {"ccc": None}}}, {"a": {"bb": {}}}, id="nulls-in-new-object"),
]


@pytest.mark.parametrize(("original", "patch", "expected"), MERGE_CASES)
def test_merge_patch_rfc7386_examples(original: Any, patch: Any, expected: Any) -> None:
    """Each RFC 7386 appendix A example gives the RFC's result."""
    assert merge_patch(original, patch) == expected


@pytest.mark.parametrize("patch", [pytest.param(["c"], id="list"), pytest.param(None, id="null")])
def test_merge_patch_rejects_non_object_patch(patch: Any) -> None:
    """A merge patch that would turn the resource into a non-object is refused."""
    with pytest.raises(PatchError, match="must itself be a JSON object"):
        merge_patch({"a": "b"}, patch)


# --- RFC 6902 ----------------------------------------------------------------------------

JSON_PATCH_CASES = [
    pytest.param(
        {"foo": "bar"},
        [{"op": "add", "path": "/baz", "value": "qux"}],
        {"baz": "qux", "foo": "bar"},
        id="A1-add-member",
    ),
    pytest.param(
        {"foo": ["bar", "baz"]},
        [{"op": "add", "path": "/foo/1", "value": "qux"}],
        {"foo": ["bar", "qux", "baz"]},
        id="A2-add-array-element",
    ),
    pytest.param(
        {"baz": "qux", "foo": "bar"},
        [{"op": "remove", "path": "/baz"}],
        {"foo": "bar"},
        id="A3-remove-member",
    ),
    pytest.param(
        {"foo": ["bar", "qux", "baz"]},
        [{"op": "remove", "path": "/foo/1"}],
        {"foo": ["bar", "baz"]},
        id="A4-remove-array-element",
    ),
    pytest.param(
        {"baz": "qux", "foo": "bar"},
        [{"op": "replace", "path": "/baz", "value": "boo"}],
        {"baz": "boo", "foo": "bar"},
        id="A5-replace",
    ),
    pytest.param(
        {"foo": {"bar": "baz", "waldo": "fred"}, "qux": {"corge": "grault"}},
        [{"op": "move", "from": "/foo/waldo", "path": "/qux/thud"}],
        {"foo": {"bar": "baz"}, "qux": {"corge": "grault", "thud": "fred"}},
        id="A6-move-member",
    ),
    pytest.param(
        {"foo": ["all", "grass", "cows", "eat"]},
        [{"op": "move", "from": "/foo/1", "path": "/foo/3"}],
        {"foo": ["all", "cows", "eat", "grass"]},
        id="A7-move-array-element",
    ),
    pytest.param(
        {"baz": "qux", "foo": ["a", 2, "c"]},
        [
            {"op": "test", "path": "/baz", "value": "qux"},
            {"op": "test", "path": "/foo/1", "value": 2},
        ],
        {"baz": "qux", "foo": ["a", 2, "c"]},
        id="A8-test-passes",
    ),
    pytest.param(
        {"foo": "bar"},
        [{"op": "add", "path": "/child", "value": {"grandchild": {}}}],
        {"foo": "bar", "child": {"grandchild": {}}},
        id="A10-add-nested-member",
    ),
    pytest.param(
        {"foo": "bar"},
        [{"op": "add", "path": "/baz", "value": "qux", "xyz": 123}],
        {"foo": "bar", "baz": "qux"},
        id="A11-unknown-members-ignored",
    ),
    pytest.param(
        {"/": 9, "~1": 10},
        [{"op": "test", "path": "/~01", "value": 10}],
        {"/": 9, "~1": 10},
        id="A14-escape-order",
    ),
    pytest.param(
        {"foo": ["bar"]},
        [{"op": "add", "path": "/foo/-", "value": ["abc", "def"]}],
        {"foo": ["bar", ["abc", "def"]]},
        id="A16-append-with-dash",
    ),
    pytest.param(
        {"a/b": {"m~n": 1}},
        [{"op": "replace", "path": "/a~1b/m~0n", "value": 2}],
        {"a/b": {"m~n": 2}},
        id="escaped-slash-and-tilde",
    ),
    pytest.param(
        {"foo": {"bar": 1}},
        [{"op": "copy", "from": "/foo", "path": "/baz"}],
        {"foo": {"bar": 1}, "baz": {"bar": 1}},
        id="copy",
    ),
    pytest.param(
        {"foo": ["a", "b"]},
        [{"op": "replace", "path": "/foo/0", "value": "z"}],
        {"foo": ["z", "b"]},
        id="replace-array-element",
    ),
    pytest.param(
        {"foo": 1}, [{"op": "add", "path": "/foo", "value": 2}], {"foo": 2}, id="add-overwrites"
    ),
    pytest.param(
        {"foo": 1}, [{"op": "add", "path": "", "value": {"new": True}}], {"new": True}, id="root"
    ),
    pytest.param(
        {"foo": 1}, [{"op": "test", "path": "/foo", "value": 1.0}], {"foo": 1}, id="int-eq-float"
    ),
    pytest.param(
        {"foo": [1]},
        [{"op": "move", "from": "/foo", "path": "/foo"}],
        {"foo": [1]},
        id="move-to-itself",
    ),
]


@pytest.mark.parametrize(("original", "ops", "expected"), JSON_PATCH_CASES)
def test_json_patch_applies_operations(original: Any, ops: Any, expected: Any) -> None:
    """RFC 6902 appendix A style operations give the RFC's result."""
    assert json_patch(original, ops) == expected


JSON_PATCH_ERRORS = [
    pytest.param(
        {"baz": "qux"}, [{"op": "test", "path": "/baz", "value": "bar"}], "test failed", id="A9"
    ),
    pytest.param(
        {"foo": "bar"},
        [{"op": "add", "path": "/baz/bat", "value": "qux"}],
        "'baz' does not exist",
        id="A12-add-to-missing-parent",
    ),
    pytest.param(
        {"/": 9, "~1": 10},
        [{"op": "test", "path": "/~01", "value": "10"}],
        "test failed",
        id="A15-string-is-not-number",
    ),
    pytest.param(
        {"a": True}, [{"op": "test", "path": "/a", "value": 1}], "test failed", id="bool-not-1"
    ),
    pytest.param({"a": 1}, [{"op": "remove", "path": "/b"}], "no member 'b'", id="remove-missing"),
    pytest.param(
        {"a": 1}, [{"op": "replace", "path": "/b", "value": 2}], "no member 'b'", id="replace-gone"
    ),
    pytest.param(
        {"a": [1, 2]},
        [{"op": "add", "path": "/a/3", "value": 9}],
        "out of range",
        id="add-past-end",
    ),
    pytest.param(
        {"a": [1, 2]}, [{"op": "remove", "path": "/a/2"}], "out of range", id="remove-past-end"
    ),
    pytest.param(
        {"a": [1, 2]}, [{"op": "remove", "path": "/a/01"}], "not an array index", id="zero-lead"
    ),
    pytest.param(
        {"a": [1, 2]}, [{"op": "remove", "path": "/a/-"}], "not an array index", id="dash-remove"
    ),
    pytest.param(
        {"a": {"b": 1}},
        [{"op": "move", "from": "/a", "path": "/a/b/c"}],
        "its own children",
        id="move-into-child",
    ),
    pytest.param({"a": 1}, [{"op": "add", "path": "/b"}], "missing member 'value'", id="no-value"),
    pytest.param({"a": 1}, [{"op": "copy", "path": "/b"}], "missing member 'from'", id="no-from"),
    pytest.param({"a": 1}, [{"path": "/a"}], "unknown op None", id="no-op"),
    pytest.param({"a": 1}, [{"op": "frob", "path": "/a"}], "unknown op 'frob'", id="bad-op"),
    pytest.param({"a": 1}, [{"op": "remove", "path": "a"}], "start with '/'", id="no-slash"),
    pytest.param({"a": 1}, [{"op": "remove", "path": "/~2"}], "followed by 0 or 1", id="bad-~"),
    pytest.param(
        {"a": "x"},
        [{"op": "add", "path": "/a/b", "value": 1}],
        "inside a str",
        id="descend-into-scalar",
    ),
    pytest.param({"a": 1}, [{"op": "remove", "path": ""}], "whole document", id="remove-root"),
    pytest.param(
        {"a": 1}, [{"op": "replace", "path": "", "value": [1]}], "not a JSON object", id="root-list"
    ),
    pytest.param({"a": 1}, ["add"], "not a JSON object", id="op-not-object"),
    pytest.param({"a": 1}, {"op": "add"}, "JSON array", id="ops-not-list"),
]


@pytest.mark.parametrize(("original", "ops", "message"), JSON_PATCH_ERRORS)
def test_json_patch_errors(original: Any, ops: Any, message: str) -> None:
    """A failed test, a missing path or a malformed operation raises PatchError saying so."""
    with pytest.raises(PatchError, match=message):
        json_patch(original, ops)


def test_json_patch_failure_changes_nothing() -> None:
    """A failing operation aborts the patch; the operations before it leave no trace."""
    original = {"a": [1]}
    ops = [{"op": "add", "path": "/a/-", "value": 2}, {"op": "remove", "path": "/missing"}]
    with pytest.raises(PatchError, match="operation 1"):
        json_patch(original, ops)
    assert original == {"a": [1]}


# --- strategic merge patch ---------------------------------------------------------------


def _pod(containers: list[dict[str, Any]], **metadata: Any) -> dict[str, Any]:
    return {"metadata": {"name": "p", **metadata}, "spec": {"containers": containers}}


def _env(*names: str, value: str = "v") -> list[dict[str, Any]]:
    return [{"name": n, "value": value} for n in names]


def _names(items: list[dict[str, Any]]) -> list[str]:
    return [i["name"] for i in items]


def _directive_keys(value: Any) -> list[str]:
    if isinstance(value, dict):
        own = [k for k in value if k.startswith("$")]
        return own + [k for v in value.values() for k in _directive_keys(v)]
    if isinstance(value, list):
        return [k for v in value for k in _directive_keys(v)]
    return []


STRATEGIC_CASES = [
    pytest.param(
        _pod([{"name": "a", "image": "a:1"}, {"name": "b", "image": "b:1"}]),
        {"spec": {"containers": [{"name": "b", "image": "b:2"}, {"name": "c", "image": "c:1"}]}},
        _pod(
            [
                {"name": "a", "image": "a:1"},
                {"name": "b", "image": "b:2"},
                {"name": "c", "image": "c:1"},
            ]
        ),
        id="containers-merged-by-name",
    ),
    pytest.param(
        _pod([{"name": "c", "env": _env("A", "B")}]),
        {"spec": {"containers": [{"name": "c", "env": [{"$patch": "delete", "name": "B"}]}]}},
        _pod([{"name": "c", "env": _env("A")}]),
        id="env-entry-deleted",
    ),
    pytest.param(
        _pod([], labels={"app": "a", "tier": "x"}),
        {"metadata": {"labels": {"tier": None, "new": "y"}}},
        _pod([], labels={"app": "a", "new": "y"}),
        id="label-removed-with-null",
    ),
    pytest.param(
        _pod([{"name": "a"}, {"name": "b"}, {"name": "c"}]),
        {"spec": {"$setElementOrder/containers": [{"name": "c"}, {"name": "a"}, {"name": "b"}]}},
        _pod([{"name": "c"}, {"name": "a"}, {"name": "b"}]),
        id="set-element-order-containers",
    ),
    pytest.param(
        _pod([{"name": "c", "env": _env("A", "B", "C")}]),
        {
            "spec": {
                "containers": [
                    {
                        "name": "c",
                        "$setElementOrder/env": [{"name": "C"}, {"name": "A"}, {"name": "B"}],
                        "env": [{"name": "C", "value": "new"}],
                    }
                ]
            }
        },
        _pod([{"name": "c", "env": [*_env("C", value="new"), *_env("A", "B")]}]),
        id="set-element-order-env",
    ),
    pytest.param(
        # Kubernetes' design doc example; its code interleaves server-only items by live order.
        _pod([{"name": "c", "env": _env("C", "B", "D", "A", "E")}]),
        {
            "spec": {
                "containers": [
                    {
                        "name": "c",
                        "$setElementOrder/env": [{"name": "A"}, {"name": "B"}],
                        "env": _env("A", "B", value="x"),
                    }
                ]
            }
        },
        _pod([{"name": "c", "env": [*_env("C", "D"), *_env("A", "B", value="x"), *_env("E")]}]),
        id="set-element-order-server-only-items",
    ),
    pytest.param(
        _pod([{"name": "c", "env": _env("E2", "E5", "E1", "E3", "E4")}]),
        {
            "spec": {
                "containers": [
                    {
                        "name": "c",
                        "$setElementOrder/env": [{"name": "E1"}, {"name": "E2"}, {"name": "E6"}],
                        "env": [{"name": "E3", "$patch": "delete"}, *_env("E6")],
                    }
                ]
            }
        },
        _pod([{"name": "c", "env": _env("E5", "E1", "E2", "E6", "E4")}]),
        id="set-element-order-with-add-and-delete",
    ),
    pytest.param(
        {"spec": {"volumes": [{"name": "v", "hostPath": {"path": "/data"}}]}},
        {"spec": {"volumes": [{"name": "v", "$retainKeys": ["name", "emptyDir"], "emptyDir": {}}]}},
        {"spec": {"volumes": [{"name": "v", "emptyDir": {}}]}},
        id="retain-keys",
    ),
    pytest.param(
        _pod([], labels={"a": "1", "b": "2"}),
        {"metadata": {"labels": {"$patch": "replace", "c": "3"}}},
        _pod([], labels={"c": "3"}),
        id="patch-replace-map",
    ),
    pytest.param(
        _pod([{"name": "a", "image": "a"}, {"name": "b", "image": "b"}]),
        {"spec": {"containers": [{"name": "z", "image": "z"}, {"$patch": "replace"}]}},
        _pod([{"name": "z", "image": "z"}]),
        id="patch-replace-list",
    ),
    pytest.param(
        {"metadata": {"finalizers": ["x", "y"]}},
        {"metadata": {"finalizers": ["y", "z"]}},
        {"metadata": {"finalizers": ["x", "y", "z"]}},
        id="finalizers-set-merge",
    ),
    pytest.param(
        {"metadata": {"finalizers": ["x", "y", "z"]}},
        {"metadata": {"$deleteFromPrimitiveList/finalizers": ["y", "absent"]}},
        {"metadata": {"finalizers": ["x", "z"]}},
        id="finalizers-delete-from-primitive-list",
    ),
    pytest.param(
        {"metadata": {"finalizers": ["x", "y"]}},
        {
            "metadata": {
                "$setElementOrder/finalizers": ["y", "w"],
                "$deleteFromPrimitiveList/finalizers": ["x"],
                "finalizers": ["w"],
            }
        },
        {"metadata": {"finalizers": ["y", "w"]}},
        id="finalizers-add-delete-and-order",
    ),
    pytest.param(
        _pod([{"name": "c", "args": ["a", "b"], "command": ["sh"]}]),
        {"spec": {"containers": [{"name": "c", "args": ["z"]}]}},
        _pod([{"name": "c", "args": ["z"], "command": ["sh"]}]),
        id="unkeyed-args-replaced",
    ),
    pytest.param(
        _pod(
            [
                {
                    "name": "c",
                    "volumeMounts": [
                        {"name": "v1", "mountPath": "/a"},
                        {"name": "v2", "mountPath": "/b", "readOnly": False},
                    ],
                }
            ]
        ),
        {
            "spec": {
                "containers": [
                    {
                        "name": "c",
                        "volumeMounts": [
                            {"mountPath": "/b", "readOnly": True},
                            {"name": "v3", "mountPath": "/c"},
                        ],
                    }
                ]
            }
        },
        _pod(
            [
                {
                    "name": "c",
                    "volumeMounts": [
                        {"name": "v1", "mountPath": "/a"},
                        {"name": "v2", "mountPath": "/b", "readOnly": True},
                        {"name": "v3", "mountPath": "/c"},
                    ],
                }
            ]
        ),
        id="volume-mounts-by-mount-path",
    ),
    pytest.param(
        _pod([{"name": "c", "ports": [{"containerPort": 80, "name": "http"}]}]),
        {"spec": {"containers": [{"name": "c", "ports": [{"containerPort": 80, "name": "web"}]}]}},
        _pod([{"name": "c", "ports": [{"containerPort": 80, "name": "web"}]}]),
        id="ports-by-container-port",
    ),
    pytest.param(
        _pod([{"name": "c", "env": _env("A", "B", value="1")}]),
        {
            "spec": {
                "containers": [
                    {
                        "name": "c",
                        "env": [{"name": "B", "value": "2"}, {"$patch": "delete", "name": "B"}],
                    }
                ]
            }
        },
        _pod([{"name": "c", "env": [*_env("A", value="1"), *_env("B", value="2")]}]),
        id="deletes-apply-before-updates",
    ),
    pytest.param(
        _pod([], annotations={"x": "y"}),
        {"metadata": {"annotations": {"$patch": "delete"}}},
        _pod([]),
        id="patch-delete-map",
    ),
    pytest.param(
        {"metadata": {"name": "p"}},
        {
            "metadata": {"labels": {"a": "1", "b": None}},
            "spec": {
                "containers": [
                    {"name": "n", "$setElementOrder/env": [{"name": "A"}], "env": _env("A")}
                ]
            },
        },
        {
            "metadata": {"name": "p", "labels": {"a": "1"}},
            "spec": {"containers": [{"name": "n", "env": _env("A")}]},
        },
        id="new-values-cleaned-of-directives",
    ),
    pytest.param(
        {"status": {"conditions": [{"type": "Ready", "status": "False"}, {"type": "X"}]}},
        {"status": {"conditions": [{"type": "Ready", "status": "True"}]}},
        {"status": {"conditions": [{"type": "Ready", "status": "True"}, {"type": "X"}]}},
        id="conditions-by-type",
    ),
    pytest.param(
        {"spec": {"nodeName": "a", "tolerations": [{"key": "k1"}]}},
        {"spec": {"nodeName": "b", "tolerations": [{"key": "k2"}]}},
        {"spec": {"nodeName": "b", "tolerations": [{"key": "k2"}]}},
        id="scalars-and-unlisted-lists-replaced",
    ),
    pytest.param(
        {"spec": {"tolerations": [{"key": "k1"}]}},
        {"spec": {"tolerations": [{"key": "k2"}, {"$patch": "delete"}, {"$patch": "replace"}]}},
        {"spec": {"tolerations": [{"key": "k2"}]}},
        id="unlisted-list-directive-items-dropped",
    ),
    pytest.param(
        {"metadata": {"name": "p"}, "spec": {}},
        {"$patch": "delete"},
        {},
        id="delete-whole-object",
    ),
]


@pytest.mark.parametrize(("original", "patch", "expected"), STRATEGIC_CASES)
def test_strategic_merge_patch(original: Any, patch: Any, expected: Any) -> None:
    """Each strategic merge patch gives the Kubernetes result, free of `$` directives."""
    result = strategic_merge_patch(original, patch, POD_KEYS)
    assert result == expected
    assert _directive_keys(result) == []


def test_strategic_merge_patch_of_kubectl_reapply() -> None:
    """The patch kubectl apply sends after one env entry and one label left the manifest."""
    original = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": "p",
            "namespace": "default",
            "labels": {"app": "a", "tier": "x"},
            "annotations": {"kubectl.kubernetes.io/last-applied-configuration": "{old}"},
        },
        "spec": {
            "containers": [
                {
                    "name": "c",
                    "image": "busybox",
                    "env": [{"name": "A", "value": "1"}, {"name": "B", "value": "2"}],
                }
            ],
            "restartPolicy": "Always",
        },
        "status": {"phase": "Running"},
    }
    patch = {
        "metadata": {
            "annotations": {"kubectl.kubernetes.io/last-applied-configuration": "{new}"},
            "labels": {"tier": None},
        },
        "spec": {
            "$setElementOrder/containers": [{"name": "c"}],
            "containers": [
                {
                    "$setElementOrder/env": [{"name": "A"}],
                    "name": "c",
                    "env": [{"$patch": "delete", "name": "B"}],
                }
            ],
        },
    }
    expected = copy.deepcopy(original)
    expected["metadata"]["labels"] = {"app": "a"}
    expected["metadata"]["annotations"] = patch["metadata"]["annotations"]
    expected["spec"]["containers"][0]["env"] = [{"name": "A", "value": "1"}]
    assert strategic_merge_patch(original, patch, POD_KEYS) == expected


STRATEGIC_ERRORS = [
    pytest.param({"metadata": {"$frob": 1}}, "unknown directive '\\$frob'", id="unknown-key"),
    pytest.param({"metadata": {"$setElementOrder/": []}}, "unknown directive", id="empty-field"),
    pytest.param({"metadata": {"$patch": "merge"}}, "unknown \\$patch directive", id="map-merge"),
    pytest.param(
        {"spec": {"containers": [{"name": "c", "$patch": "bogus"}]}},
        "unknown \\$patch directive 'bogus'",
        id="item-bogus",
    ),
    pytest.param(
        {"spec": {"containers": [{"$patch": "delete"}]}},
        "spec.containers: an item lacks its merge key 'name'",
        id="delete-without-key",
    ),
    pytest.param(
        {"spec": {"containers": [{"image": "x"}]}},
        "lacks its merge key 'name'",
        id="item-without-key",
    ),
    pytest.param({"spec": {"containers": ["c"]}}, "must be objects", id="item-not-object"),
    pytest.param(
        {"spec": {"$retainKeys": ["containers"], "nodeName": "n"}},
        "\\['nodeName'\\] are patched but not in \\$retainKeys",
        id="retain-keys-stray-field",
    ),
    pytest.param({"spec": {"$retainKeys": "all"}}, "list of field names", id="retain-not-list"),
    pytest.param(
        {
            "spec": {
                "$setElementOrder/containers": [{"name": "a"}],
                "containers": [{"name": "b"}],
            }
        },
        "does not follow its \\$setElementOrder",
        id="order-misses-patch-item",
    ),
    pytest.param(
        {
            "spec": {
                "$setElementOrder/containers": [{"name": "a"}, {"name": "b"}],
                "containers": [{"name": "b"}, {"name": "a"}],
            }
        },
        "does not follow its \\$setElementOrder",
        id="order-contradicts-patch",
    ),
    pytest.param(
        {"spec": {"$setElementOrder/containers": [{"image": "a"}]}},
        "entry lacks the key 'name'",
        id="order-entry-without-key",
    ),
    pytest.param(
        {"spec": {"$setElementOrder/containers": {"name": "a"}}}, "takes a list", id="order-map"
    ),
    pytest.param(
        {"metadata": {"$deleteFromPrimitiveList/finalizers": "x"}}, "takes a list", id="del-str"
    ),
    pytest.param(
        {"metadata": {"finalizers": [{"a": 1}]}}, "merged as a set", id="set-with-objects"
    ),
]


@pytest.mark.parametrize(("patch", "message"), STRATEGIC_ERRORS)
def test_strategic_merge_patch_errors(patch: Any, message: str) -> None:
    """A malformed directive or list item raises PatchError naming the problem."""
    original = _pod([{"name": "a"}, {"name": "b"}], finalizers=["f"])
    with pytest.raises(PatchError, match=message):
        strategic_merge_patch(original, patch, POD_KEYS)


def test_strategic_merge_patch_rejects_non_object() -> None:
    """A strategic merge patch must be a JSON object."""
    with pytest.raises(PatchError, match="must be a JSON object"):
        strategic_merge_patch({}, [], POD_KEYS)  # type: ignore[arg-type]


# --- purity ------------------------------------------------------------------------------

PURE_CASES = [
    pytest.param(
        merge_patch,
        {
            "metadata": {"labels": {"app": None}},
            "spec": {"nodeSelector": {"disk": "ssd"}, "tolerations": [{"key": "k"}]},
        },
        id="merge",
    ),
    pytest.param(
        json_patch,
        [
            {"op": "remove", "path": "/metadata/labels/app"},
            {"op": "add", "path": "/spec/nodeSelector", "value": {"disk": "ssd"}},
            {"op": "add", "path": "/spec/tolerations", "value": [{"key": "k"}]},
        ],
        id="json",
    ),
    pytest.param(
        lambda original, patch: strategic_merge_patch(original, patch, POD_KEYS),
        {
            "metadata": {"labels": {"app": None}},
            "spec": {
                "$setElementOrder/containers": [{"name": "c"}],
                "containers": [{"name": "c", "env": [{"$patch": "delete", "name": "A"}]}],
                "nodeSelector": {"disk": "ssd"},
                "tolerations": [{"key": "k"}],
            },
        },
        id="strategic",
    ),
]


@pytest.mark.parametrize(("apply", "patch"), PURE_CASES)
def test_inputs_not_mutated_and_not_shared(apply: Any, patch: Any) -> None:
    """No patch function changes its inputs, and the result shares no containers with them."""
    original = _pod([{"name": "c", "env": _env("A", "B")}], labels={"app": "a"})
    original["status"] = {"conditions": [{"type": "Ready"}]}
    before_original, before_patch = copy.deepcopy(original), copy.deepcopy(patch)
    result = apply(original, patch)
    assert (original, patch) == (before_original, before_patch)
    result["metadata"]["labels"]["mutated"] = "yes"
    result["spec"]["containers"][0]["env"].append({"name": "Z"})
    result["spec"]["nodeSelector"]["disk"] = "hdd"
    result["spec"]["tolerations"][0]["key"] = "changed"
    result["status"]["conditions"][0]["type"] = "Changed"
    assert (original, patch) == (before_original, before_patch)
