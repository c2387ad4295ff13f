from google.protobuf import struct_pb2 as _struct_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ContentRef(_message.Message):
    __slots__ = ("inline", "file_ref")
    INLINE_FIELD_NUMBER: _ClassVar[int]
    FILE_REF_FIELD_NUMBER: _ClassVar[int]
    inline: _struct_pb2.Value
    file_ref: FileRef
    def __init__(self, inline: _Optional[_Union[_struct_pb2.Value, _Mapping]] = ..., file_ref: _Optional[_Union[FileRef, _Mapping]] = ...) -> None: ...

class FileRef(_message.Message):
    __slots__ = ("path", "mime", "size_hint")
    PATH_FIELD_NUMBER: _ClassVar[int]
    MIME_FIELD_NUMBER: _ClassVar[int]
    SIZE_HINT_FIELD_NUMBER: _ClassVar[int]
    path: str
    mime: str
    size_hint: int
    def __init__(self, path: _Optional[str] = ..., mime: _Optional[str] = ..., size_hint: _Optional[int] = ...) -> None: ...

class OutputEvent(_message.Message):
    __slots__ = ("progress", "partial", "artifact", "final")
    PROGRESS_FIELD_NUMBER: _ClassVar[int]
    PARTIAL_FIELD_NUMBER: _ClassVar[int]
    ARTIFACT_FIELD_NUMBER: _ClassVar[int]
    FINAL_FIELD_NUMBER: _ClassVar[int]
    progress: Progress
    partial: Partial
    artifact: Artifact
    final: Final
    def __init__(self, progress: _Optional[_Union[Progress, _Mapping]] = ..., partial: _Optional[_Union[Partial, _Mapping]] = ..., artifact: _Optional[_Union[Artifact, _Mapping]] = ..., final: _Optional[_Union[Final, _Mapping]] = ...) -> None: ...

class Progress(_message.Message):
    __slots__ = ("stage", "note")
    STAGE_FIELD_NUMBER: _ClassVar[int]
    NOTE_FIELD_NUMBER: _ClassVar[int]
    stage: str
    note: str
    def __init__(self, stage: _Optional[str] = ..., note: _Optional[str] = ...) -> None: ...

class Partial(_message.Message):
    __slots__ = ("chunk",)
    CHUNK_FIELD_NUMBER: _ClassVar[int]
    chunk: ContentRef
    def __init__(self, chunk: _Optional[_Union[ContentRef, _Mapping]] = ...) -> None: ...

class Artifact(_message.Message):
    __slots__ = ("name", "content")
    NAME_FIELD_NUMBER: _ClassVar[int]
    CONTENT_FIELD_NUMBER: _ClassVar[int]
    name: str
    content: ContentRef
    def __init__(self, name: _Optional[str] = ..., content: _Optional[_Union[ContentRef, _Mapping]] = ...) -> None: ...

class Final(_message.Message):
    __slots__ = ("content", "ok")
    CONTENT_FIELD_NUMBER: _ClassVar[int]
    OK_FIELD_NUMBER: _ClassVar[int]
    content: ContentRef
    ok: bool
    def __init__(self, content: _Optional[_Union[ContentRef, _Mapping]] = ..., ok: bool = ...) -> None: ...

class EmitRequest(_message.Message):
    __slots__ = ("step_id", "attempt", "producer_agent", "event", "parent_refs")
    STEP_ID_FIELD_NUMBER: _ClassVar[int]
    ATTEMPT_FIELD_NUMBER: _ClassVar[int]
    PRODUCER_AGENT_FIELD_NUMBER: _ClassVar[int]
    EVENT_FIELD_NUMBER: _ClassVar[int]
    PARENT_REFS_FIELD_NUMBER: _ClassVar[int]
    step_id: str
    attempt: int
    producer_agent: str
    event: OutputEvent
    parent_refs: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, step_id: _Optional[str] = ..., attempt: _Optional[int] = ..., producer_agent: _Optional[str] = ..., event: _Optional[_Union[OutputEvent, _Mapping]] = ..., parent_refs: _Optional[_Iterable[str]] = ...) -> None: ...

class EmitResponse(_message.Message):
    __slots__ = ("out_id",)
    OUT_ID_FIELD_NUMBER: _ClassVar[int]
    out_id: str
    def __init__(self, out_id: _Optional[str] = ...) -> None: ...

class EmitNamedRequest(_message.Message):
    __slots__ = ("name", "step_id", "attempt", "event", "parent_refs")
    NAME_FIELD_NUMBER: _ClassVar[int]
    STEP_ID_FIELD_NUMBER: _ClassVar[int]
    ATTEMPT_FIELD_NUMBER: _ClassVar[int]
    EVENT_FIELD_NUMBER: _ClassVar[int]
    PARENT_REFS_FIELD_NUMBER: _ClassVar[int]
    name: str
    step_id: str
    attempt: int
    event: OutputEvent
    parent_refs: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, name: _Optional[str] = ..., step_id: _Optional[str] = ..., attempt: _Optional[int] = ..., event: _Optional[_Union[OutputEvent, _Mapping]] = ..., parent_refs: _Optional[_Iterable[str]] = ...) -> None: ...

class EmitNamedResponse(_message.Message):
    __slots__ = ("out_id",)
    OUT_ID_FIELD_NUMBER: _ClassVar[int]
    out_id: str
    def __init__(self, out_id: _Optional[str] = ...) -> None: ...

class GetRequest(_message.Message):
    __slots__ = ("key",)
    KEY_FIELD_NUMBER: _ClassVar[int]
    key: str
    def __init__(self, key: _Optional[str] = ...) -> None: ...

class GetResponse(_message.Message):
    __slots__ = ("record",)
    RECORD_FIELD_NUMBER: _ClassVar[int]
    record: OutputRecord
    def __init__(self, record: _Optional[_Union[OutputRecord, _Mapping]] = ...) -> None: ...

class OutputRecord(_message.Message):
    __slots__ = ("out_id", "step_id", "attempt", "producer_agent", "event", "parent_refs")
    OUT_ID_FIELD_NUMBER: _ClassVar[int]
    STEP_ID_FIELD_NUMBER: _ClassVar[int]
    ATTEMPT_FIELD_NUMBER: _ClassVar[int]
    PRODUCER_AGENT_FIELD_NUMBER: _ClassVar[int]
    EVENT_FIELD_NUMBER: _ClassVar[int]
    PARENT_REFS_FIELD_NUMBER: _ClassVar[int]
    out_id: str
    step_id: str
    attempt: int
    producer_agent: str
    event: OutputEvent
    parent_refs: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, out_id: _Optional[str] = ..., step_id: _Optional[str] = ..., attempt: _Optional[int] = ..., producer_agent: _Optional[str] = ..., event: _Optional[_Union[OutputEvent, _Mapping]] = ..., parent_refs: _Optional[_Iterable[str]] = ...) -> None: ...
