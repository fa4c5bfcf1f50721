"""KubeEdge's MQTT topics at the edge: the filters edgecore subscribes to and the grammar of
the device and membership topics (../shared/reference/kubeedge-facts.md, "Edge MQTT topics").

A device id is `{namespace}/{name}`, so it spans two topic levels:
`$hw/events/device/{namespace}/{name}/twin/update`. A topic naming a one-level id is still
subscribed to, so that the mapper gets a 400 result instead of silence.

No MQTT library is imported here, so the twin module can use it too; `mqtt_message` is the
bus form of an MQTT message both modules exchange.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from common.envelope import Message, new_message
from common.names import Group, Module, Operation

DEVICE_PREFIX = "$hw/events/device/"
NODE_PREFIX = "$hw/events/node/"
UPLOAD_PREFIX = "$hw/events/upload/"
UPLOAD_RECORDS = "SYS/dis/upload_records"
RESULT_SUFFIX = "/result"

# Topic prefixes the embedded broker lets ordinary clients publish to although they begin
# with "$" (KubeEdge's device and edge topics); see edge/eventbus/broker.py.
KUBEEDGE_PREFIXES = ("$hw/", "$ke/")


class Action(StrEnum):
    """What a request topic asks edgecore to do (its last levels)."""

    TWIN_UPDATE = "twin/update"
    TWIN_GET = "twin/get"
    STATE_UPDATE = "state/update"
    MEMBERSHIP_GET = "membership/get"


def subscriptions(node: str) -> list[str]:
    """Every filter edgecore's internal client subscribes to."""
    device_actions = (Action.TWIN_UPDATE, Action.TWIN_GET, Action.STATE_UPDATE)
    filters = [f"{DEVICE_PREFIX}+/+/{action}" for action in device_actions]
    filters += [f"{DEVICE_PREFIX}+/{action}" for action in device_actions]
    filters += [
        f"{NODE_PREFIX}{node}/{Action.MEMBERSHIP_GET}",
        f"{UPLOAD_PREFIX}#",
        UPLOAD_RECORDS,
    ]
    return filters


def is_upload(topic: str) -> bool:
    """Application data that goes up to the cloud untouched."""
    return topic.startswith(UPLOAD_PREFIX) or topic == UPLOAD_RECORDS


@dataclass(frozen=True, slots=True)
class Request:
    """A parsed request topic: the action and, for device topics, the raw device id."""

    action: Action
    device_id: str  # "{namespace}/{name}" as written in the topic; "" for membership
    node: str  # the node named by a membership topic; "" for device topics

    @property
    def result_topic(self) -> str:
        return request_topic(self) + RESULT_SUFFIX


def request_topic(req: Request) -> str:
    if req.action == Action.MEMBERSHIP_GET:
        return f"{NODE_PREFIX}{req.node}/{req.action}"
    return f"{DEVICE_PREFIX}{req.device_id}/{req.action}"


def parse_request(topic: str) -> Request | None:
    """The request a topic carries, or None when it is not a request topic."""
    if topic.startswith(NODE_PREFIX):
        node, _, rest = topic[len(NODE_PREFIX) :].partition("/")
        if node and rest == Action.MEMBERSHIP_GET:
            return Request(Action.MEMBERSHIP_GET, "", node)
        return None
    if not topic.startswith(DEVICE_PREFIX):
        return None
    rest = topic[len(DEVICE_PREFIX) :]
    for action in (Action.TWIN_UPDATE, Action.TWIN_GET, Action.STATE_UPDATE):
        suffix = "/" + action
        if rest.endswith(suffix) and len(rest) > len(suffix):
            return Request(action, rest[: -len(suffix)], "")
    return None


def device_topic(device_id: str, leaf: str) -> str:
    """`$hw/events/device/{id}/{leaf}`, e.g. leaf "twin/update/delta"."""
    return f"{DEVICE_PREFIX}{device_id}/{leaf}"


def twin_delta(device_id: str) -> str:
    return device_topic(device_id, "twin/update/delta")


def twin_document(device_id: str) -> str:
    return device_topic(device_id, "twin/update/document")


def membership_updated(node: str) -> str:
    return f"{NODE_PREFIX}{node}/membership/updated"


def mqtt_message(source: str, topic: str, payload: bytes, *, to_broker: bool = False) -> Message:
    """The bus form of an MQTT message: operation publish, resource = topic, body opaque JSON.
    `to_broker`: addressed to the eventbus (to be published), else to the twin group."""
    msg = new_message(
        source=source,
        group=Group.BUS if to_broker else Group.TWIN,
        destination=Module.EVENTBUS if to_broker else "",
        operation=Operation.PUBLISH,
        resource=topic,
    )
    msg.opaque.content_type = "application/json"
    msg.opaque.data = payload
    return msg
