from google.protobuf import struct_pb2 as _struct_pb2
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class SubmitOutcome(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    SUBMIT_OUTCOME_UNSPECIFIED: _ClassVar[SubmitOutcome]
    SUBMIT_OUTCOME_PASS: _ClassVar[SubmitOutcome]
    SUBMIT_OUTCOME_BLOCKED: _ClassVar[SubmitOutcome]
    SUBMIT_OUTCOME_SKIP: _ClassVar[SubmitOutcome]
SUBMIT_OUTCOME_UNSPECIFIED: SubmitOutcome
SUBMIT_OUTCOME_PASS: SubmitOutcome
SUBMIT_OUTCOME_BLOCKED: SubmitOutcome
SUBMIT_OUTCOME_SKIP: SubmitOutcome

class GetPromptRequest(_message.Message):
    __slots__ = ("step_id",)
    STEP_ID_FIELD_NUMBER: _ClassVar[int]
    step_id: str
    def __init__(self, step_id: _Optional[str] = ...) -> None: ...

class GetPromptResponse(_message.Message):
    __slots__ = ("step_id", "attempt", "agent", "system", "prompt")
    STEP_ID_FIELD_NUMBER: _ClassVar[int]
    ATTEMPT_FIELD_NUMBER: _ClassVar[int]
    AGENT_FIELD_NUMBER: _ClassVar[int]
    SYSTEM_FIELD_NUMBER: _ClassVar[int]
    PROMPT_FIELD_NUMBER: _ClassVar[int]
    step_id: str
    attempt: int
    agent: str
    system: str
    prompt: str
    def __init__(self, step_id: _Optional[str] = ..., attempt: _Optional[int] = ..., agent: _Optional[str] = ..., system: _Optional[str] = ..., prompt: _Optional[str] = ...) -> None: ...

class SubmitRequest(_message.Message):
    __slots__ = ("body", "outcome", "step_id")
    BODY_FIELD_NUMBER: _ClassVar[int]
    OUTCOME_FIELD_NUMBER: _ClassVar[int]
    STEP_ID_FIELD_NUMBER: _ClassVar[int]
    body: str
    outcome: SubmitOutcome
    step_id: str
    def __init__(self, body: _Optional[str] = ..., outcome: _Optional[_Union[SubmitOutcome, str]] = ..., step_id: _Optional[str] = ...) -> None: ...

class SubmitResponse(_message.Message):
    __slots__ = ("step_id", "attempt")
    STEP_ID_FIELD_NUMBER: _ClassVar[int]
    ATTEMPT_FIELD_NUMBER: _ClassVar[int]
    step_id: str
    attempt: int
    def __init__(self, step_id: _Optional[str] = ..., attempt: _Optional[int] = ...) -> None: ...

class PostResultRequest(_message.Message):
    __slots__ = ("step_id", "value", "ok")
    STEP_ID_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    OK_FIELD_NUMBER: _ClassVar[int]
    step_id: str
    value: _struct_pb2.Value
    ok: bool
    def __init__(self, step_id: _Optional[str] = ..., value: _Optional[_Union[_struct_pb2.Value, _Mapping]] = ..., ok: bool = ...) -> None: ...

class PostResultResponse(_message.Message):
    __slots__ = ("step_id", "attempt")
    STEP_ID_FIELD_NUMBER: _ClassVar[int]
    ATTEMPT_FIELD_NUMBER: _ClassVar[int]
    step_id: str
    attempt: int
    def __init__(self, step_id: _Optional[str] = ..., attempt: _Optional[int] = ...) -> None: ...
