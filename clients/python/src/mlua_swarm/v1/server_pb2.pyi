from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from typing import ClassVar as _ClassVar, Optional as _Optional

DESCRIPTOR: _descriptor.FileDescriptor

class GetStatsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class GetStatsResponse(_message.Message):
    __slots__ = ("tasks_in_flight", "tasks_completed_last_minute", "operator_pending_requests", "operator_unacked_frames", "operator_sessions_live", "operator_sessions_attached")
    TASKS_IN_FLIGHT_FIELD_NUMBER: _ClassVar[int]
    TASKS_COMPLETED_LAST_MINUTE_FIELD_NUMBER: _ClassVar[int]
    OPERATOR_PENDING_REQUESTS_FIELD_NUMBER: _ClassVar[int]
    OPERATOR_UNACKED_FRAMES_FIELD_NUMBER: _ClassVar[int]
    OPERATOR_SESSIONS_LIVE_FIELD_NUMBER: _ClassVar[int]
    OPERATOR_SESSIONS_ATTACHED_FIELD_NUMBER: _ClassVar[int]
    tasks_in_flight: int
    tasks_completed_last_minute: int
    operator_pending_requests: int
    operator_unacked_frames: int
    operator_sessions_live: int
    operator_sessions_attached: int
    def __init__(self, tasks_in_flight: _Optional[int] = ..., tasks_completed_last_minute: _Optional[int] = ..., operator_pending_requests: _Optional[int] = ..., operator_unacked_frames: _Optional[int] = ..., operator_sessions_live: _Optional[int] = ..., operator_sessions_attached: _Optional[int] = ...) -> None: ...
