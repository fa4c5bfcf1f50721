from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class TwinValue(_message.Message):
    __slots__ = ("value", "timestamp_ms")
    VALUE_FIELD_NUMBER: _ClassVar[int]
    TIMESTAMP_MS_FIELD_NUMBER: _ClassVar[int]
    value: str
    timestamp_ms: int
    def __init__(self, value: _Optional[str] = ..., timestamp_ms: _Optional[int] = ...) -> None: ...

class TwinVersion(_message.Message):
    __slots__ = ("cloud", "edge")
    CLOUD_FIELD_NUMBER: _ClassVar[int]
    EDGE_FIELD_NUMBER: _ClassVar[int]
    cloud: int
    edge: int
    def __init__(self, cloud: _Optional[int] = ..., edge: _Optional[int] = ...) -> None: ...

class Twin(_message.Message):
    __slots__ = ("expected", "actual", "is_optional", "type", "expected_version", "actual_version", "deleted")
    EXPECTED_FIELD_NUMBER: _ClassVar[int]
    ACTUAL_FIELD_NUMBER: _ClassVar[int]
    IS_OPTIONAL_FIELD_NUMBER: _ClassVar[int]
    TYPE_FIELD_NUMBER: _ClassVar[int]
    EXPECTED_VERSION_FIELD_NUMBER: _ClassVar[int]
    ACTUAL_VERSION_FIELD_NUMBER: _ClassVar[int]
    DELETED_FIELD_NUMBER: _ClassVar[int]
    expected: TwinValue
    actual: TwinValue
    is_optional: bool
    type: str
    expected_version: TwinVersion
    actual_version: TwinVersion
    deleted: bool
    def __init__(self, expected: _Optional[_Union[TwinValue, _Mapping]] = ..., actual: _Optional[_Union[TwinValue, _Mapping]] = ..., is_optional: _Optional[bool] = ..., type: _Optional[str] = ..., expected_version: _Optional[_Union[TwinVersion, _Mapping]] = ..., actual_version: _Optional[_Union[TwinVersion, _Mapping]] = ..., deleted: _Optional[bool] = ...) -> None: ...

class TwinUpdate(_message.Message):
    __slots__ = ("device_id", "event_id", "timestamp_ms", "twin")
    class TwinEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: Twin
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[Twin, _Mapping]] = ...) -> None: ...
    DEVICE_ID_FIELD_NUMBER: _ClassVar[int]
    EVENT_ID_FIELD_NUMBER: _ClassVar[int]
    TIMESTAMP_MS_FIELD_NUMBER: _ClassVar[int]
    TWIN_FIELD_NUMBER: _ClassVar[int]
    device_id: str
    event_id: str
    timestamp_ms: int
    twin: _containers.MessageMap[str, Twin]
    def __init__(self, device_id: _Optional[str] = ..., event_id: _Optional[str] = ..., timestamp_ms: _Optional[int] = ..., twin: _Optional[_Mapping[str, Twin]] = ...) -> None: ...

class TwinDelta(_message.Message):
    __slots__ = ("device_id", "event_id", "timestamp_ms", "twin", "delta")
    class TwinEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: Twin
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[Twin, _Mapping]] = ...) -> None: ...
    class DeltaEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    DEVICE_ID_FIELD_NUMBER: _ClassVar[int]
    EVENT_ID_FIELD_NUMBER: _ClassVar[int]
    TIMESTAMP_MS_FIELD_NUMBER: _ClassVar[int]
    TWIN_FIELD_NUMBER: _ClassVar[int]
    DELTA_FIELD_NUMBER: _ClassVar[int]
    device_id: str
    event_id: str
    timestamp_ms: int
    twin: _containers.MessageMap[str, Twin]
    delta: _containers.ScalarMap[str, str]
    def __init__(self, device_id: _Optional[str] = ..., event_id: _Optional[str] = ..., timestamp_ms: _Optional[int] = ..., twin: _Optional[_Mapping[str, Twin]] = ..., delta: _Optional[_Mapping[str, str]] = ...) -> None: ...

class TwinHistory(_message.Message):
    __slots__ = ("last", "current")
    LAST_FIELD_NUMBER: _ClassVar[int]
    CURRENT_FIELD_NUMBER: _ClassVar[int]
    last: Twin
    current: Twin
    def __init__(self, last: _Optional[_Union[Twin, _Mapping]] = ..., current: _Optional[_Union[Twin, _Mapping]] = ...) -> None: ...

class TwinDocument(_message.Message):
    __slots__ = ("device_id", "event_id", "timestamp_ms", "twin")
    class TwinEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: TwinHistory
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[TwinHistory, _Mapping]] = ...) -> None: ...
    DEVICE_ID_FIELD_NUMBER: _ClassVar[int]
    EVENT_ID_FIELD_NUMBER: _ClassVar[int]
    TIMESTAMP_MS_FIELD_NUMBER: _ClassVar[int]
    TWIN_FIELD_NUMBER: _ClassVar[int]
    device_id: str
    event_id: str
    timestamp_ms: int
    twin: _containers.MessageMap[str, TwinHistory]
    def __init__(self, device_id: _Optional[str] = ..., event_id: _Optional[str] = ..., timestamp_ms: _Optional[int] = ..., twin: _Optional[_Mapping[str, TwinHistory]] = ...) -> None: ...

class TwinResult(_message.Message):
    __slots__ = ("device_id", "event_id", "timestamp_ms", "code", "reason", "twin")
    class TwinEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: Twin
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[Twin, _Mapping]] = ...) -> None: ...
    DEVICE_ID_FIELD_NUMBER: _ClassVar[int]
    EVENT_ID_FIELD_NUMBER: _ClassVar[int]
    TIMESTAMP_MS_FIELD_NUMBER: _ClassVar[int]
    CODE_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    TWIN_FIELD_NUMBER: _ClassVar[int]
    device_id: str
    event_id: str
    timestamp_ms: int
    code: int
    reason: str
    twin: _containers.MessageMap[str, Twin]
    def __init__(self, device_id: _Optional[str] = ..., event_id: _Optional[str] = ..., timestamp_ms: _Optional[int] = ..., code: _Optional[int] = ..., reason: _Optional[str] = ..., twin: _Optional[_Mapping[str, Twin]] = ...) -> None: ...

class DeviceState(_message.Message):
    __slots__ = ("device_id", "event_id", "timestamp_ms", "state", "last_online_ms")
    DEVICE_ID_FIELD_NUMBER: _ClassVar[int]
    EVENT_ID_FIELD_NUMBER: _ClassVar[int]
    TIMESTAMP_MS_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    LAST_ONLINE_MS_FIELD_NUMBER: _ClassVar[int]
    device_id: str
    event_id: str
    timestamp_ms: int
    state: str
    last_online_ms: int
    def __init__(self, device_id: _Optional[str] = ..., event_id: _Optional[str] = ..., timestamp_ms: _Optional[int] = ..., state: _Optional[str] = ..., last_online_ms: _Optional[int] = ...) -> None: ...

class Device(_message.Message):
    __slots__ = ("id", "name", "namespace", "description", "state", "model", "twin", "attributes")
    class TwinEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: Twin
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[Twin, _Mapping]] = ...) -> None: ...
    class AttributesEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    NAMESPACE_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    TWIN_FIELD_NUMBER: _ClassVar[int]
    ATTRIBUTES_FIELD_NUMBER: _ClassVar[int]
    id: str
    name: str
    namespace: str
    description: str
    state: str
    model: str
    twin: _containers.MessageMap[str, Twin]
    attributes: _containers.ScalarMap[str, str]
    def __init__(self, id: _Optional[str] = ..., name: _Optional[str] = ..., namespace: _Optional[str] = ..., description: _Optional[str] = ..., state: _Optional[str] = ..., model: _Optional[str] = ..., twin: _Optional[_Mapping[str, Twin]] = ..., attributes: _Optional[_Mapping[str, str]] = ...) -> None: ...

class MembershipUpdate(_message.Message):
    __slots__ = ("node_name", "event_id", "timestamp_ms", "added_devices", "removed_devices")
    NODE_NAME_FIELD_NUMBER: _ClassVar[int]
    EVENT_ID_FIELD_NUMBER: _ClassVar[int]
    TIMESTAMP_MS_FIELD_NUMBER: _ClassVar[int]
    ADDED_DEVICES_FIELD_NUMBER: _ClassVar[int]
    REMOVED_DEVICES_FIELD_NUMBER: _ClassVar[int]
    node_name: str
    event_id: str
    timestamp_ms: int
    added_devices: _containers.RepeatedCompositeFieldContainer[Device]
    removed_devices: _containers.RepeatedCompositeFieldContainer[Device]
    def __init__(self, node_name: _Optional[str] = ..., event_id: _Optional[str] = ..., timestamp_ms: _Optional[int] = ..., added_devices: _Optional[_Iterable[_Union[Device, _Mapping]]] = ..., removed_devices: _Optional[_Iterable[_Union[Device, _Mapping]]] = ...) -> None: ...
