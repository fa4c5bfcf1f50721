"""Names of modules, groups, operations and resource types: the vocabulary of the bus and the wire.

Every string a route carries comes from here, so a typo is a NameError, not a silent misroute.
The values follow KubeEdge (edge/pkg/common/modules, beehive model) where KubeEdge has a name.
"""

import re
from enum import StrEnum


class Module(StrEnum):
    """A module registered on a process's bus."""

    CLOUDHUB = "cloudhub"
    EDGECONTROLLER = "edgecontroller"
    DEVICECONTROLLER = "devicecontroller"
    SYNCCONTROLLER = "synccontroller"
    EDGEHUB = "edgehub"
    METAMANAGER = "metamanager"
    EDGED = "edged"
    DEVICETWIN = "twin"
    EVENTBUS = "eventbus"
    METRICS = "metrics"
    CLOUDSTREAM = "cloudstream"
    # edgecontroller's second inbox: the nodes' answers to log queries, so that reports
    # waiting for a slow API never hold up a `kubectl logs` stream.
    LOGSTREAMS = "logstreams"


class Group(StrEnum):
    """A group of modules; a message routed to a group reaches every module in it."""

    HUB = "hub"
    META = "meta"
    RESOURCE = "resource"
    TWIN = "twin"
    EDGED = "edged"
    BUS = "bus"
    USER = "user"
    SYNC = "sync"
    METRICS = "metrics"
    STREAM = "stream"
    LOGS = "logs"  # only Module.LOGSTREAMS; nothing is routed to it by group


class Operation(StrEnum):
    """What a message does to its resource."""

    INSERT = "insert"
    UPDATE = "update"
    PATCH = "patch"
    DELETE = "delete"
    QUERY = "query"
    RESPONSE = "response"
    ERROR = "error"
    KEEPALIVE = "keepalive"
    UPLOAD = "upload"
    # An MQTT message on the edge bus (eventbus <-> twin); the resource is the MQTT topic.
    PUBLISH = "publish"


KNOWN_OPERATIONS = frozenset(op.value for op in Operation)

# Operations that change an object: queued updates of one object collapse into the newest.
OBJECT_OPERATIONS = frozenset(
    {Operation.INSERT, Operation.UPDATE, Operation.PATCH, Operation.DELETE}
)


class ResourceType(StrEnum):
    """The {type} part of a resource string, as KubeEdge spells it."""

    POD = "pod"
    POD_STATUS = "podstatus"
    NODE = "node"
    NODE_STATUS = "nodestatus"
    LEASE = "lease"
    CONFIGMAP = "configmap"
    SECRET = "secret"
    EVENT = "event"
    DEVICE = "device"
    DEVICE_MODEL = "devicemodel"
    TWIN = "twin"
    MEMBERSHIP = "membership"
    LOG = "log"
    DEVICE_STATE = "devicestate"
    UPLOAD = "upload"


# The namespace part of a resource string for cluster-scoped objects (KubeEdge's convention).
CLUSTER_NAMESPACE = "null"

# The namespace of node Leases (Kubernetes' convention): a node renews `{LEASE_NAMESPACE}/{node}`.
LEASE_NAMESPACE = "kube-node-lease"

# The namespace of Events about a Node (the kubelet's recorder puts them there).
NODE_EVENT_NAMESPACE = "default"
# An edge node's Events come from the kubelet (KubeEdge's edged runs the kubelet's recorder).
EVENT_SOURCE_COMPONENT = "kubelet"
# The API's limit on an Event's note (message); the edge cuts to it, the cloud checks it.
MAX_EVENT_MESSAGE = 1024

# gRPC call metadata key naming the edge node that opens a HubService stream.
NODE_NAME_METADATA = "node-name"

# A Kubernetes node name: a DNS subdomain (RFC 1123), at most 253 characters.
_NODE_NAME = re.compile(r"[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?")


def valid_node_name(name: str) -> bool:
    return bool(_NODE_NAME.fullmatch(name))
