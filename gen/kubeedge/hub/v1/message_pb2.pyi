from kubeedge.twin.v1 import twin_pb2 as _twin_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Message(_message.Message):
    __slots__ = ("header", "route", "object", "ack", "error", "keepalive", "query", "query_result", "pod_status", "node_status", "lease", "twin_update", "twin_delta", "twin_document", "twin_result", "device_state", "membership", "stream_frame", "opaque", "log_query", "stream_cancel")
    HEADER_FIELD_NUMBER: _ClassVar[int]
    ROUTE_FIELD_NUMBER: _ClassVar[int]
    OBJECT_FIELD_NUMBER: _ClassVar[int]
    ACK_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    KEEPALIVE_FIELD_NUMBER: _ClassVar[int]
    QUERY_FIELD_NUMBER: _ClassVar[int]
    QUERY_RESULT_FIELD_NUMBER: _ClassVar[int]
    POD_STATUS_FIELD_NUMBER: _ClassVar[int]
    NODE_STATUS_FIELD_NUMBER: _ClassVar[int]
    LEASE_FIELD_NUMBER: _ClassVar[int]
    TWIN_UPDATE_FIELD_NUMBER: _ClassVar[int]
    TWIN_DELTA_FIELD_NUMBER: _ClassVar[int]
    TWIN_DOCUMENT_FIELD_NUMBER: _ClassVar[int]
    TWIN_RESULT_FIELD_NUMBER: _ClassVar[int]
    DEVICE_STATE_FIELD_NUMBER: _ClassVar[int]
    MEMBERSHIP_FIELD_NUMBER: _ClassVar[int]
    STREAM_FRAME_FIELD_NUMBER: _ClassVar[int]
    OPAQUE_FIELD_NUMBER: _ClassVar[int]
    LOG_QUERY_FIELD_NUMBER: _ClassVar[int]
    STREAM_CANCEL_FIELD_NUMBER: _ClassVar[int]
    header: Header
    route: Route
    object: ObjectEvent
    ack: Ack
    error: Error
    keepalive: Keepalive
    query: Query
    query_result: QueryResult
    pod_status: PodStatusReport
    node_status: NodeStatusReport
    lease: LeaseRenewal
    twin_update: _twin_pb2.TwinUpdate
    twin_delta: _twin_pb2.TwinDelta
    twin_document: _twin_pb2.TwinDocument
    twin_result: _twin_pb2.TwinResult
    device_state: _twin_pb2.DeviceState
    membership: _twin_pb2.MembershipUpdate
    stream_frame: StreamFrame
    opaque: Opaque
    log_query: LogQuery
    stream_cancel: StreamCancel
    def __init__(self, header: _Optional[_Union[Header, _Mapping]] = ..., route: _Optional[_Union[Route, _Mapping]] = ..., object: _Optional[_Union[ObjectEvent, _Mapping]] = ..., ack: _Optional[_Union[Ack, _Mapping]] = ..., error: _Optional[_Union[Error, _Mapping]] = ..., keepalive: _Optional[_Union[Keepalive, _Mapping]] = ..., query: _Optional[_Union[Query, _Mapping]] = ..., query_result: _Optional[_Union[QueryResult, _Mapping]] = ..., pod_status: _Optional[_Union[PodStatusReport, _Mapping]] = ..., node_status: _Optional[_Union[NodeStatusReport, _Mapping]] = ..., lease: _Optional[_Union[LeaseRenewal, _Mapping]] = ..., twin_update: _Optional[_Union[_twin_pb2.TwinUpdate, _Mapping]] = ..., twin_delta: _Optional[_Union[_twin_pb2.TwinDelta, _Mapping]] = ..., twin_document: _Optional[_Union[_twin_pb2.TwinDocument, _Mapping]] = ..., twin_result: _Optional[_Union[_twin_pb2.TwinResult, _Mapping]] = ..., device_state: _Optional[_Union[_twin_pb2.DeviceState, _Mapping]] = ..., membership: _Optional[_Union[_twin_pb2.MembershipUpdate, _Mapping]] = ..., stream_frame: _Optional[_Union[StreamFrame, _Mapping]] = ..., opaque: _Optional[_Union[Opaque, _Mapping]] = ..., log_query: _Optional[_Union[LogQuery, _Mapping]] = ..., stream_cancel: _Optional[_Union[StreamCancel, _Mapping]] = ...) -> None: ...

class Header(_message.Message):
    __slots__ = ("id", "parent_id", "timestamp_ms", "resource_version", "sync")
    ID_FIELD_NUMBER: _ClassVar[int]
    PARENT_ID_FIELD_NUMBER: _ClassVar[int]
    TIMESTAMP_MS_FIELD_NUMBER: _ClassVar[int]
    RESOURCE_VERSION_FIELD_NUMBER: _ClassVar[int]
    SYNC_FIELD_NUMBER: _ClassVar[int]
    id: str
    parent_id: str
    timestamp_ms: int
    resource_version: str
    sync: bool
    def __init__(self, id: _Optional[str] = ..., parent_id: _Optional[str] = ..., timestamp_ms: _Optional[int] = ..., resource_version: _Optional[str] = ..., sync: _Optional[bool] = ...) -> None: ...

class Route(_message.Message):
    __slots__ = ("source", "destination", "group", "operation", "resource")
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    DESTINATION_FIELD_NUMBER: _ClassVar[int]
    GROUP_FIELD_NUMBER: _ClassVar[int]
    OPERATION_FIELD_NUMBER: _ClassVar[int]
    RESOURCE_FIELD_NUMBER: _ClassVar[int]
    source: str
    destination: str
    group: str
    operation: str
    resource: str
    def __init__(self, source: _Optional[str] = ..., destination: _Optional[str] = ..., group: _Optional[str] = ..., operation: _Optional[str] = ..., resource: _Optional[str] = ...) -> None: ...

class ObjectEvent(_message.Message):
    __slots__ = ("api_version", "kind", "namespace", "name", "uid", "resource_version", "object_json")
    API_VERSION_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    NAMESPACE_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    UID_FIELD_NUMBER: _ClassVar[int]
    RESOURCE_VERSION_FIELD_NUMBER: _ClassVar[int]
    OBJECT_JSON_FIELD_NUMBER: _ClassVar[int]
    api_version: str
    kind: str
    namespace: str
    name: str
    uid: str
    resource_version: str
    object_json: bytes
    def __init__(self, api_version: _Optional[str] = ..., kind: _Optional[str] = ..., namespace: _Optional[str] = ..., name: _Optional[str] = ..., uid: _Optional[str] = ..., resource_version: _Optional[str] = ..., object_json: _Optional[bytes] = ...) -> None: ...

class Ack(_message.Message):
    __slots__ = ("resource_version",)
    RESOURCE_VERSION_FIELD_NUMBER: _ClassVar[int]
    resource_version: str
    def __init__(self, resource_version: _Optional[str] = ...) -> None: ...

class Error(_message.Message):
    __slots__ = ("code", "message")
    CODE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    code: int
    message: str
    def __init__(self, code: _Optional[int] = ..., message: _Optional[str] = ...) -> None: ...

class Keepalive(_message.Message):
    __slots__ = ("unacked",)
    UNACKED_FIELD_NUMBER: _ClassVar[int]
    unacked: int
    def __init__(self, unacked: _Optional[int] = ...) -> None: ...

class Query(_message.Message):
    __slots__ = ("api_version", "kind", "namespace", "name", "label_selector", "field_selector")
    API_VERSION_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    NAMESPACE_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    LABEL_SELECTOR_FIELD_NUMBER: _ClassVar[int]
    FIELD_SELECTOR_FIELD_NUMBER: _ClassVar[int]
    api_version: str
    kind: str
    namespace: str
    name: str
    label_selector: str
    field_selector: str
    def __init__(self, api_version: _Optional[str] = ..., kind: _Optional[str] = ..., namespace: _Optional[str] = ..., name: _Optional[str] = ..., label_selector: _Optional[str] = ..., field_selector: _Optional[str] = ...) -> None: ...

class QueryResult(_message.Message):
    __slots__ = ("objects",)
    OBJECTS_FIELD_NUMBER: _ClassVar[int]
    objects: _containers.RepeatedCompositeFieldContainer[ObjectEvent]
    def __init__(self, objects: _Optional[_Iterable[_Union[ObjectEvent, _Mapping]]] = ...) -> None: ...

class PodStatusReport(_message.Message):
    __slots__ = ("namespace", "name", "uid", "status_json")
    NAMESPACE_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    UID_FIELD_NUMBER: _ClassVar[int]
    STATUS_JSON_FIELD_NUMBER: _ClassVar[int]
    namespace: str
    name: str
    uid: str
    status_json: bytes
    def __init__(self, namespace: _Optional[str] = ..., name: _Optional[str] = ..., uid: _Optional[str] = ..., status_json: _Optional[bytes] = ...) -> None: ...

class NodeStatusReport(_message.Message):
    __slots__ = ("node_name", "status_json")
    NODE_NAME_FIELD_NUMBER: _ClassVar[int]
    STATUS_JSON_FIELD_NUMBER: _ClassVar[int]
    node_name: str
    status_json: bytes
    def __init__(self, node_name: _Optional[str] = ..., status_json: _Optional[bytes] = ...) -> None: ...

class LeaseRenewal(_message.Message):
    __slots__ = ("node_name", "renew_time_ms", "lease_duration_seconds")
    NODE_NAME_FIELD_NUMBER: _ClassVar[int]
    RENEW_TIME_MS_FIELD_NUMBER: _ClassVar[int]
    LEASE_DURATION_SECONDS_FIELD_NUMBER: _ClassVar[int]
    node_name: str
    renew_time_ms: int
    lease_duration_seconds: int
    def __init__(self, node_name: _Optional[str] = ..., renew_time_ms: _Optional[int] = ..., lease_duration_seconds: _Optional[int] = ...) -> None: ...

class StreamFrame(_message.Message):
    __slots__ = ("stream_id", "sequence", "data", "end")
    STREAM_ID_FIELD_NUMBER: _ClassVar[int]
    SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    END_FIELD_NUMBER: _ClassVar[int]
    stream_id: str
    sequence: int
    data: bytes
    end: bool
    def __init__(self, stream_id: _Optional[str] = ..., sequence: _Optional[int] = ..., data: _Optional[bytes] = ..., end: _Optional[bool] = ...) -> None: ...

class StreamCancel(_message.Message):
    __slots__ = ("stream_id", "reason")
    STREAM_ID_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    stream_id: str
    reason: str
    def __init__(self, stream_id: _Optional[str] = ..., reason: _Optional[str] = ...) -> None: ...

class Opaque(_message.Message):
    __slots__ = ("content_type", "data")
    CONTENT_TYPE_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    content_type: str
    data: bytes
    def __init__(self, content_type: _Optional[str] = ..., data: _Optional[bytes] = ...) -> None: ...

class LogQuery(_message.Message):
    __slots__ = ("namespace", "pod", "container", "follow", "tail_lines", "since_seconds", "timestamps")
    NAMESPACE_FIELD_NUMBER: _ClassVar[int]
    POD_FIELD_NUMBER: _ClassVar[int]
    CONTAINER_FIELD_NUMBER: _ClassVar[int]
    FOLLOW_FIELD_NUMBER: _ClassVar[int]
    TAIL_LINES_FIELD_NUMBER: _ClassVar[int]
    SINCE_SECONDS_FIELD_NUMBER: _ClassVar[int]
    TIMESTAMPS_FIELD_NUMBER: _ClassVar[int]
    namespace: str
    pod: str
    container: str
    follow: bool
    tail_lines: int
    since_seconds: int
    timestamps: bool
    def __init__(self, namespace: _Optional[str] = ..., pod: _Optional[str] = ..., container: _Optional[str] = ..., follow: _Optional[bool] = ..., tail_lines: _Optional[int] = ..., since_seconds: _Optional[int] = ..., timestamps: _Optional[bool] = ...) -> None: ...
