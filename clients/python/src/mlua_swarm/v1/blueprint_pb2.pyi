from google.protobuf import struct_pb2 as _struct_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class PutBlueprintRequest(_message.Message):
    __slots__ = ("id", "blueprint")
    ID_FIELD_NUMBER: _ClassVar[int]
    BLUEPRINT_FIELD_NUMBER: _ClassVar[int]
    id: str
    blueprint: _struct_pb2.Struct
    def __init__(self, id: _Optional[str] = ..., blueprint: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ...) -> None: ...

class PutBlueprintResponse(_message.Message):
    __slots__ = ("id", "version", "created")
    ID_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    CREATED_FIELD_NUMBER: _ClassVar[int]
    id: str
    version: str
    created: bool
    def __init__(self, id: _Optional[str] = ..., version: _Optional[str] = ..., created: bool = ...) -> None: ...

class GetBlueprintRequest(_message.Message):
    __slots__ = ("id", "version")
    ID_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    id: str
    version: str
    def __init__(self, id: _Optional[str] = ..., version: _Optional[str] = ...) -> None: ...

class GetBlueprintResponse(_message.Message):
    __slots__ = ("id", "version", "blueprint")
    ID_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    BLUEPRINT_FIELD_NUMBER: _ClassVar[int]
    id: str
    version: str
    blueprint: _struct_pb2.Struct
    def __init__(self, id: _Optional[str] = ..., version: _Optional[str] = ..., blueprint: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ...) -> None: ...

class ListBlueprintsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListBlueprintsResponse(_message.Message):
    __slots__ = ("blueprints",)
    BLUEPRINTS_FIELD_NUMBER: _ClassVar[int]
    blueprints: _containers.RepeatedCompositeFieldContainer[BlueprintSummary]
    def __init__(self, blueprints: _Optional[_Iterable[_Union[BlueprintSummary, _Mapping]]] = ...) -> None: ...

class BlueprintSummary(_message.Message):
    __slots__ = ("id", "head_version", "version_label", "description")
    ID_FIELD_NUMBER: _ClassVar[int]
    HEAD_VERSION_FIELD_NUMBER: _ClassVar[int]
    VERSION_LABEL_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    id: str
    head_version: str
    version_label: str
    description: str
    def __init__(self, id: _Optional[str] = ..., head_version: _Optional[str] = ..., version_label: _Optional[str] = ..., description: _Optional[str] = ...) -> None: ...

class ListVersionsRequest(_message.Message):
    __slots__ = ("id", "limit")
    ID_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    id: str
    limit: int
    def __init__(self, id: _Optional[str] = ..., limit: _Optional[int] = ...) -> None: ...

class ListVersionsResponse(_message.Message):
    __slots__ = ("versions",)
    VERSIONS_FIELD_NUMBER: _ClassVar[int]
    versions: _containers.RepeatedCompositeFieldContainer[BlueprintVersionInfo]
    def __init__(self, versions: _Optional[_Iterable[_Union[BlueprintVersionInfo, _Mapping]]] = ...) -> None: ...

class BlueprintVersionInfo(_message.Message):
    __slots__ = ("version", "version_label", "rationale")
    VERSION_FIELD_NUMBER: _ClassVar[int]
    VERSION_LABEL_FIELD_NUMBER: _ClassVar[int]
    RATIONALE_FIELD_NUMBER: _ClassVar[int]
    version: str
    version_label: str
    rationale: str
    def __init__(self, version: _Optional[str] = ..., version_label: _Optional[str] = ..., rationale: _Optional[str] = ...) -> None: ...

class ArchiveBlueprintRequest(_message.Message):
    __slots__ = ("id",)
    ID_FIELD_NUMBER: _ClassVar[int]
    id: str
    def __init__(self, id: _Optional[str] = ...) -> None: ...

class ArchiveBlueprintResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class UnarchiveBlueprintRequest(_message.Message):
    __slots__ = ("id",)
    ID_FIELD_NUMBER: _ClassVar[int]
    id: str
    def __init__(self, id: _Optional[str] = ...) -> None: ...

class UnarchiveBlueprintResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...
