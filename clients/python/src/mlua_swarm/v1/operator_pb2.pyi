import datetime

from google.protobuf import struct_pb2 as _struct_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class SendOutcome(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    SEND_OUTCOME_UNSPECIFIED: _ClassVar[SendOutcome]
    SEND_OUTCOME_ACCEPTED: _ClassVar[SendOutcome]
    SEND_OUTCOME_DUPLICATE: _ClassVar[SendOutcome]
    SEND_OUTCOME_UNKNOWN: _ClassVar[SendOutcome]
    SEND_OUTCOME_STALE: _ClassVar[SendOutcome]
    SEND_OUTCOME_WRONG_KIND: _ClassVar[SendOutcome]

class NoticeCode(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    NOTICE_CODE_UNSPECIFIED: _ClassVar[NoticeCode]
    NOTICE_CODE_DUPLICATE: _ClassVar[NoticeCode]
    NOTICE_CODE_UNKNOWN_REQ: _ClassVar[NoticeCode]
    NOTICE_CODE_STALE: _ClassVar[NoticeCode]
    NOTICE_CODE_WRONG_KIND: _ClassVar[NoticeCode]
    NOTICE_CODE_INVALID_FRAME: _ClassVar[NoticeCode]
    NOTICE_CODE_TOO_LARGE: _ClassVar[NoticeCode]
SEND_OUTCOME_UNSPECIFIED: SendOutcome
SEND_OUTCOME_ACCEPTED: SendOutcome
SEND_OUTCOME_DUPLICATE: SendOutcome
SEND_OUTCOME_UNKNOWN: SendOutcome
SEND_OUTCOME_STALE: SendOutcome
SEND_OUTCOME_WRONG_KIND: SendOutcome
NOTICE_CODE_UNSPECIFIED: NoticeCode
NOTICE_CODE_DUPLICATE: NoticeCode
NOTICE_CODE_UNKNOWN_REQ: NoticeCode
NOTICE_CODE_STALE: NoticeCode
NOTICE_CODE_WRONG_KIND: NoticeCode
NOTICE_CODE_INVALID_FRAME: NoticeCode
NOTICE_CODE_TOO_LARGE: NoticeCode

class CreateSessionRequest(_message.Message):
    __slots__ = ("roles",)
    ROLES_FIELD_NUMBER: _ClassVar[int]
    roles: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, roles: _Optional[_Iterable[str]] = ...) -> None: ...

class CreateSessionResponse(_message.Message):
    __slots__ = ("sid", "token", "roles")
    SID_FIELD_NUMBER: _ClassVar[int]
    TOKEN_FIELD_NUMBER: _ClassVar[int]
    ROLES_FIELD_NUMBER: _ClassVar[int]
    sid: str
    token: str
    roles: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, sid: _Optional[str] = ..., token: _Optional[str] = ..., roles: _Optional[_Iterable[str]] = ...) -> None: ...

class Session(_message.Message):
    __slots__ = ("sid", "roles", "connected", "pending", "last_seen", "epoch", "last_seq", "acked_seq", "created_at")
    SID_FIELD_NUMBER: _ClassVar[int]
    ROLES_FIELD_NUMBER: _ClassVar[int]
    CONNECTED_FIELD_NUMBER: _ClassVar[int]
    PENDING_FIELD_NUMBER: _ClassVar[int]
    LAST_SEEN_FIELD_NUMBER: _ClassVar[int]
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    LAST_SEQ_FIELD_NUMBER: _ClassVar[int]
    ACKED_SEQ_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    sid: str
    roles: _containers.RepeatedScalarFieldContainer[str]
    connected: bool
    pending: int
    last_seen: _timestamp_pb2.Timestamp
    epoch: int
    last_seq: int
    acked_seq: int
    created_at: _timestamp_pb2.Timestamp
    def __init__(self, sid: _Optional[str] = ..., roles: _Optional[_Iterable[str]] = ..., connected: bool = ..., pending: _Optional[int] = ..., last_seen: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., epoch: _Optional[int] = ..., last_seq: _Optional[int] = ..., acked_seq: _Optional[int] = ..., created_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class GetSessionRequest(_message.Message):
    __slots__ = ("sid",)
    SID_FIELD_NUMBER: _ClassVar[int]
    sid: str
    def __init__(self, sid: _Optional[str] = ...) -> None: ...

class GetSessionResponse(_message.Message):
    __slots__ = ("session",)
    SESSION_FIELD_NUMBER: _ClassVar[int]
    session: Session
    def __init__(self, session: _Optional[_Union[Session, _Mapping]] = ...) -> None: ...

class ListSessionsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListSessionsResponse(_message.Message):
    __slots__ = ("sessions",)
    SESSIONS_FIELD_NUMBER: _ClassVar[int]
    sessions: _containers.RepeatedCompositeFieldContainer[Session]
    def __init__(self, sessions: _Optional[_Iterable[_Union[Session, _Mapping]]] = ...) -> None: ...

class DeleteSessionRequest(_message.Message):
    __slots__ = ("sid",)
    SID_FIELD_NUMBER: _ClassVar[int]
    sid: str
    def __init__(self, sid: _Optional[str] = ...) -> None: ...

class DeleteSessionResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class SubscribeRequest(_message.Message):
    __slots__ = ("sid", "last_seq")
    SID_FIELD_NUMBER: _ClassVar[int]
    LAST_SEQ_FIELD_NUMBER: _ClassVar[int]
    sid: str
    last_seq: int
    def __init__(self, sid: _Optional[str] = ..., last_seq: _Optional[int] = ...) -> None: ...

class SendRequest(_message.Message):
    __slots__ = ("sid", "frame")
    SID_FIELD_NUMBER: _ClassVar[int]
    FRAME_FIELD_NUMBER: _ClassVar[int]
    sid: str
    frame: ClientFrame
    def __init__(self, sid: _Optional[str] = ..., frame: _Optional[_Union[ClientFrame, _Mapping]] = ...) -> None: ...

class SendResponse(_message.Message):
    __slots__ = ("outcome", "message")
    OUTCOME_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    outcome: SendOutcome
    message: str
    def __init__(self, outcome: _Optional[_Union[SendOutcome, str]] = ..., message: _Optional[str] = ...) -> None: ...

class ServerFrame(_message.Message):
    __slots__ = ("seq", "welcome", "ask", "hook_before", "hook_after", "spawn", "cancel", "ping", "closing", "notice")
    SEQ_FIELD_NUMBER: _ClassVar[int]
    WELCOME_FIELD_NUMBER: _ClassVar[int]
    ASK_FIELD_NUMBER: _ClassVar[int]
    HOOK_BEFORE_FIELD_NUMBER: _ClassVar[int]
    HOOK_AFTER_FIELD_NUMBER: _ClassVar[int]
    SPAWN_FIELD_NUMBER: _ClassVar[int]
    CANCEL_FIELD_NUMBER: _ClassVar[int]
    PING_FIELD_NUMBER: _ClassVar[int]
    CLOSING_FIELD_NUMBER: _ClassVar[int]
    NOTICE_FIELD_NUMBER: _ClassVar[int]
    seq: int
    welcome: Welcome
    ask: Ask
    hook_before: HookBefore
    hook_after: HookAfter
    spawn: Spawn
    cancel: Cancel
    ping: Ping
    closing: Closing
    notice: Notice
    def __init__(self, seq: _Optional[int] = ..., welcome: _Optional[_Union[Welcome, _Mapping]] = ..., ask: _Optional[_Union[Ask, _Mapping]] = ..., hook_before: _Optional[_Union[HookBefore, _Mapping]] = ..., hook_after: _Optional[_Union[HookAfter, _Mapping]] = ..., spawn: _Optional[_Union[Spawn, _Mapping]] = ..., cancel: _Optional[_Union[Cancel, _Mapping]] = ..., ping: _Optional[_Union[Ping, _Mapping]] = ..., closing: _Optional[_Union[Closing, _Mapping]] = ..., notice: _Optional[_Union[Notice, _Mapping]] = ...) -> None: ...

class ClientFrame(_message.Message):
    __slots__ = ("hello", "answer", "hook_ack", "spawn_ack", "ack", "pong")
    HELLO_FIELD_NUMBER: _ClassVar[int]
    ANSWER_FIELD_NUMBER: _ClassVar[int]
    HOOK_ACK_FIELD_NUMBER: _ClassVar[int]
    SPAWN_ACK_FIELD_NUMBER: _ClassVar[int]
    ACK_FIELD_NUMBER: _ClassVar[int]
    PONG_FIELD_NUMBER: _ClassVar[int]
    hello: Hello
    answer: Answer
    hook_ack: HookAck
    spawn_ack: SpawnAck
    ack: Ack
    pong: Pong
    def __init__(self, hello: _Optional[_Union[Hello, _Mapping]] = ..., answer: _Optional[_Union[Answer, _Mapping]] = ..., hook_ack: _Optional[_Union[HookAck, _Mapping]] = ..., spawn_ack: _Optional[_Union[SpawnAck, _Mapping]] = ..., ack: _Optional[_Union[Ack, _Mapping]] = ..., pong: _Optional[_Union[Pong, _Mapping]] = ...) -> None: ...

class Hello(_message.Message):
    __slots__ = ("sid", "last_seq")
    SID_FIELD_NUMBER: _ClassVar[int]
    LAST_SEQ_FIELD_NUMBER: _ClassVar[int]
    sid: str
    last_seq: int
    def __init__(self, sid: _Optional[str] = ..., last_seq: _Optional[int] = ...) -> None: ...

class Welcome(_message.Message):
    __slots__ = ("sid", "epoch", "acked_seq", "replayed", "roles", "ping_interval_secs", "server_restarted")
    SID_FIELD_NUMBER: _ClassVar[int]
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    ACKED_SEQ_FIELD_NUMBER: _ClassVar[int]
    REPLAYED_FIELD_NUMBER: _ClassVar[int]
    ROLES_FIELD_NUMBER: _ClassVar[int]
    PING_INTERVAL_SECS_FIELD_NUMBER: _ClassVar[int]
    SERVER_RESTARTED_FIELD_NUMBER: _ClassVar[int]
    sid: str
    epoch: int
    acked_seq: int
    replayed: int
    roles: _containers.RepeatedScalarFieldContainer[str]
    ping_interval_secs: int
    server_restarted: bool
    def __init__(self, sid: _Optional[str] = ..., epoch: _Optional[int] = ..., acked_seq: _Optional[int] = ..., replayed: _Optional[int] = ..., roles: _Optional[_Iterable[str]] = ..., ping_interval_secs: _Optional[int] = ..., server_restarted: bool = ...) -> None: ...

class Ask(_message.Message):
    __slots__ = ("req_id", "task_id", "step_id", "question", "deadline_unix_ms")
    REQ_ID_FIELD_NUMBER: _ClassVar[int]
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    STEP_ID_FIELD_NUMBER: _ClassVar[int]
    QUESTION_FIELD_NUMBER: _ClassVar[int]
    DEADLINE_UNIX_MS_FIELD_NUMBER: _ClassVar[int]
    req_id: str
    task_id: str
    step_id: str
    question: _struct_pb2.Value
    deadline_unix_ms: int
    def __init__(self, req_id: _Optional[str] = ..., task_id: _Optional[str] = ..., step_id: _Optional[str] = ..., question: _Optional[_Union[_struct_pb2.Value, _Mapping]] = ..., deadline_unix_ms: _Optional[int] = ...) -> None: ...

class HookBefore(_message.Message):
    __slots__ = ("req_id", "task_id", "step_id", "agent", "attempt", "deadline_unix_ms")
    REQ_ID_FIELD_NUMBER: _ClassVar[int]
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    STEP_ID_FIELD_NUMBER: _ClassVar[int]
    AGENT_FIELD_NUMBER: _ClassVar[int]
    ATTEMPT_FIELD_NUMBER: _ClassVar[int]
    DEADLINE_UNIX_MS_FIELD_NUMBER: _ClassVar[int]
    req_id: str
    task_id: str
    step_id: str
    agent: str
    attempt: int
    deadline_unix_ms: int
    def __init__(self, req_id: _Optional[str] = ..., task_id: _Optional[str] = ..., step_id: _Optional[str] = ..., agent: _Optional[str] = ..., attempt: _Optional[int] = ..., deadline_unix_ms: _Optional[int] = ...) -> None: ...

class HookAfter(_message.Message):
    __slots__ = ("req_id", "task_id", "step_id", "agent", "attempt", "result")
    REQ_ID_FIELD_NUMBER: _ClassVar[int]
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    STEP_ID_FIELD_NUMBER: _ClassVar[int]
    AGENT_FIELD_NUMBER: _ClassVar[int]
    ATTEMPT_FIELD_NUMBER: _ClassVar[int]
    RESULT_FIELD_NUMBER: _ClassVar[int]
    req_id: str
    task_id: str
    step_id: str
    agent: str
    attempt: int
    result: _struct_pb2.Value
    def __init__(self, req_id: _Optional[str] = ..., task_id: _Optional[str] = ..., step_id: _Optional[str] = ..., agent: _Optional[str] = ..., attempt: _Optional[int] = ..., result: _Optional[_Union[_struct_pb2.Value, _Mapping]] = ...) -> None: ...

class Spawn(_message.Message):
    __slots__ = ("req_id", "task_id", "step_id", "agent", "attempt", "capability_token", "worker_handle", "directive", "deadline_unix_ms", "traceparent")
    REQ_ID_FIELD_NUMBER: _ClassVar[int]
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    STEP_ID_FIELD_NUMBER: _ClassVar[int]
    AGENT_FIELD_NUMBER: _ClassVar[int]
    ATTEMPT_FIELD_NUMBER: _ClassVar[int]
    CAPABILITY_TOKEN_FIELD_NUMBER: _ClassVar[int]
    WORKER_HANDLE_FIELD_NUMBER: _ClassVar[int]
    DIRECTIVE_FIELD_NUMBER: _ClassVar[int]
    DEADLINE_UNIX_MS_FIELD_NUMBER: _ClassVar[int]
    TRACEPARENT_FIELD_NUMBER: _ClassVar[int]
    req_id: str
    task_id: str
    step_id: str
    agent: str
    attempt: int
    capability_token: str
    worker_handle: str
    directive: str
    deadline_unix_ms: int
    traceparent: str
    def __init__(self, req_id: _Optional[str] = ..., task_id: _Optional[str] = ..., step_id: _Optional[str] = ..., agent: _Optional[str] = ..., attempt: _Optional[int] = ..., capability_token: _Optional[str] = ..., worker_handle: _Optional[str] = ..., directive: _Optional[str] = ..., deadline_unix_ms: _Optional[int] = ..., traceparent: _Optional[str] = ...) -> None: ...

class Cancel(_message.Message):
    __slots__ = ("req_id", "reason")
    REQ_ID_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    req_id: str
    reason: str
    def __init__(self, req_id: _Optional[str] = ..., reason: _Optional[str] = ...) -> None: ...

class Ping(_message.Message):
    __slots__ = ("nonce",)
    NONCE_FIELD_NUMBER: _ClassVar[int]
    nonce: int
    def __init__(self, nonce: _Optional[int] = ...) -> None: ...

class Closing(_message.Message):
    __slots__ = ("reason", "retry_after_ms")
    REASON_FIELD_NUMBER: _ClassVar[int]
    RETRY_AFTER_MS_FIELD_NUMBER: _ClassVar[int]
    reason: str
    retry_after_ms: int
    def __init__(self, reason: _Optional[str] = ..., retry_after_ms: _Optional[int] = ...) -> None: ...

class Notice(_message.Message):
    __slots__ = ("code", "req_id", "message")
    CODE_FIELD_NUMBER: _ClassVar[int]
    REQ_ID_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    code: NoticeCode
    req_id: str
    message: str
    def __init__(self, code: _Optional[_Union[NoticeCode, str]] = ..., req_id: _Optional[str] = ..., message: _Optional[str] = ...) -> None: ...

class Answer(_message.Message):
    __slots__ = ("req_id", "value")
    REQ_ID_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    req_id: str
    value: _struct_pb2.Value
    def __init__(self, req_id: _Optional[str] = ..., value: _Optional[_Union[_struct_pb2.Value, _Mapping]] = ...) -> None: ...

class HookAck(_message.Message):
    __slots__ = ("req_id", "ok", "reason")
    REQ_ID_FIELD_NUMBER: _ClassVar[int]
    OK_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    req_id: str
    ok: bool
    reason: str
    def __init__(self, req_id: _Optional[str] = ..., ok: bool = ..., reason: _Optional[str] = ...) -> None: ...

class SpawnAck(_message.Message):
    __slots__ = ("req_id", "value", "ok", "error")
    REQ_ID_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    OK_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    req_id: str
    value: _struct_pb2.Value
    ok: bool
    error: str
    def __init__(self, req_id: _Optional[str] = ..., value: _Optional[_Union[_struct_pb2.Value, _Mapping]] = ..., ok: bool = ..., error: _Optional[str] = ...) -> None: ...

class Ack(_message.Message):
    __slots__ = ("seq",)
    SEQ_FIELD_NUMBER: _ClassVar[int]
    seq: int
    def __init__(self, seq: _Optional[int] = ...) -> None: ...

class Pong(_message.Message):
    __slots__ = ("nonce",)
    NONCE_FIELD_NUMBER: _ClassVar[int]
    nonce: int
    def __init__(self, nonce: _Optional[int] = ...) -> None: ...
