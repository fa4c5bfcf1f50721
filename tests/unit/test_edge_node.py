"""The Node edged registers: what the scheduler reads, and configured taints."""

from __future__ import annotations

import pytest

from edge.edged.node import node_object, parse_taints


def test_node_carries_capacity_labels_and_taints() -> None:
    """Capacity and allocatable come from the host; the edge role label is KubeEdge's; the
    configured taints are in the spec."""
    node = node_object("edge-9", "containerd 1.6", parse_taints("dedicated=edge:NoSchedule"))
    assert node["metadata"]["labels"]["node-role.kubernetes.io/edge"] == ""
    status = node["status"]
    assert int(status["capacity"]["cpu"]) >= 1 and status["allocatable"]["pods"] == "110"
    assert status["capacity"]["memory"].endswith("Ki")
    assert node["spec"]["taints"] == [{"key": "dedicated", "value": "edge", "effect": "NoSchedule"}]
    assert node_object("edge-9", "x")["spec"] == {}


@pytest.mark.parametrize(
    ("text", "want"),
    [
        pytest.param("a:NoExecute", [{"key": "a", "effect": "NoExecute"}], id="no-value"),
        pytest.param(
            "a=1:NoSchedule, b:PreferNoSchedule",
            [
                {"key": "a", "value": "1", "effect": "NoSchedule"},
                {"key": "b", "effect": "PreferNoSchedule"},
            ],
            id="two",
        ),
        pytest.param("", [], id="none"),
    ],
)
def test_taints_parse_as_the_kubelet_takes_them(text: str, want: list[dict[str, str]]) -> None:
    """`key[=value]:Effect,...` as the kubelet's --register-with-taints."""
    assert parse_taints(text) == want


@pytest.mark.parametrize("text", ["a", "a=1", "a:Sometimes", ":NoSchedule"])
def test_a_bad_taint_names_itself(text: str) -> None:
    """A malformed entry is refused with the entry in the message."""
    with pytest.raises(ValueError, match="taint"):
        parse_taints(text)
