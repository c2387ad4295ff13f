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

class OperatorKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    OPERATOR_KIND_UNSPECIFIED: _ClassVar[OperatorKind]
    OPERATOR_KIND_MAIN_AI: _ClassVar[OperatorKind]
    OPERATOR_KIND_AUTOMATE: _ClassVar[OperatorKind]
    OPERATOR_KIND_COMPOSITE: _ClassVar[OperatorKind]

class TaskState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    TASK_STATE_UNSPECIFIED: _ClassVar[TaskState]
    TASK_STATE_RUNNING: _ClassVar[TaskState]
    TASK_STATE_COMPLETED: _ClassVar[TaskState]
    TASK_STATE_FAILED: _ClassVar[TaskState]
    TASK_STATE_CANCELLED: _ClassVar[TaskState]
    TASK_STATE_INTERRUPTED: _ClassVar[TaskState]

class RunStart(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    RUN_START_UNSPECIFIED: _ClassVar[RunStart]
    RUN_START_LAUNCH: _ClassVar[RunStart]
    RUN_START_RESUME: _ClassVar[RunStart]
    RUN_START_RERUN: _ClassVar[RunStart]

class RunEnd(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    RUN_END_UNSPECIFIED: _ClassVar[RunEnd]
    RUN_END_COMPLETED: _ClassVar[RunEnd]
    RUN_END_FAILED: _ClassVar[RunEnd]
    RUN_END_CANCELLED: _ClassVar[RunEnd]
    RUN_END_INTERRUPTED: _ClassVar[RunEnd]

class TtlSource(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    TTL_SOURCE_UNSPECIFIED: _ClassVar[TtlSource]
    TTL_SOURCE_REQUEST_BODY: _ClassVar[TtlSource]
    TTL_SOURCE_BP_METADATA: _ClassVar[TtlSource]
    TTL_SOURCE_SERVER_DEFAULT: _ClassVar[TtlSource]
OPERATOR_KIND_UNSPECIFIED: OperatorKind
OPERATOR_KIND_MAIN_AI: OperatorKind
OPERATOR_KIND_AUTOMATE: OperatorKind
OPERATOR_KIND_COMPOSITE: OperatorKind
TASK_STATE_UNSPECIFIED: TaskState
TASK_STATE_RUNNING: TaskState
TASK_STATE_COMPLETED: TaskState
TASK_STATE_FAILED: TaskState
TASK_STATE_CANCELLED: TaskState
TASK_STATE_INTERRUPTED: TaskState
RUN_START_UNSPECIFIED: RunStart
RUN_START_LAUNCH: RunStart
RUN_START_RESUME: RunStart
RUN_START_RERUN: RunStart
RUN_END_UNSPECIFIED: RunEnd
RUN_END_COMPLETED: RunEnd
RUN_END_FAILED: RunEnd
RUN_END_CANCELLED: RunEnd
RUN_END_INTERRUPTED: RunEnd
TTL_SOURCE_UNSPECIFIED: TtlSource
TTL_SOURCE_REQUEST_BODY: TtlSource
TTL_SOURCE_BP_METADATA: TtlSource
TTL_SOURCE_SERVER_DEFAULT: TtlSource

class BlueprintRef(_message.Message):
    __slots__ = ("inline", "stored")
    INLINE_FIELD_NUMBER: _ClassVar[int]
    STORED_FIELD_NUMBER: _ClassVar[int]
    inline: _struct_pb2.Struct
    stored: StoredBlueprintRef
    def __init__(self, inline: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., stored: _Optional[_Union[StoredBlueprintRef, _Mapping]] = ...) -> None: ...

class StoredBlueprintRef(_message.Message):
    __slots__ = ("id", "version")
    ID_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    id: str
    version: VersionSelector
    def __init__(self, id: _Optional[str] = ..., version: _Optional[_Union[VersionSelector, _Mapping]] = ...) -> None: ...

class VersionSelector(_message.Message):
    __slots__ = ("latest", "fixed", "semver_req")
    LATEST_FIELD_NUMBER: _ClassVar[int]
    FIXED_FIELD_NUMBER: _ClassVar[int]
    SEMVER_REQ_FIELD_NUMBER: _ClassVar[int]
    latest: bool
    fixed: str
    semver_req: str
    def __init__(self, latest: bool = ..., fixed: _Optional[str] = ..., semver_req: _Optional[str] = ...) -> None: ...

class OperatorOptions(_message.Message):
    __slots__ = ("kind", "spawn_hook_id", "senior_bridge_id", "per_agent_kinds", "id")
    class PerAgentKindsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: OperatorKind
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[OperatorKind, str]] = ...) -> None: ...
    KIND_FIELD_NUMBER: _ClassVar[int]
    SPAWN_HOOK_ID_FIELD_NUMBER: _ClassVar[int]
    SENIOR_BRIDGE_ID_FIELD_NUMBER: _ClassVar[int]
    PER_AGENT_KINDS_FIELD_NUMBER: _ClassVar[int]
    ID_FIELD_NUMBER: _ClassVar[int]
    kind: OperatorKind
    spawn_hook_id: str
    senior_bridge_id: str
    per_agent_kinds: _containers.ScalarMap[str, OperatorKind]
    id: str
    def __init__(self, kind: _Optional[_Union[OperatorKind, str]] = ..., spawn_hook_id: _Optional[str] = ..., senior_bridge_id: _Optional[str] = ..., per_agent_kinds: _Optional[_Mapping[str, OperatorKind]] = ..., id: _Optional[str] = ...) -> None: ...

class StartTaskRequest(_message.Message):
    __slots__ = ("blueprint", "init_ctx", "ttl_secs", "operator", "operator_sid")
    BLUEPRINT_FIELD_NUMBER: _ClassVar[int]
    INIT_CTX_FIELD_NUMBER: _ClassVar[int]
    TTL_SECS_FIELD_NUMBER: _ClassVar[int]
    OPERATOR_FIELD_NUMBER: _ClassVar[int]
    OPERATOR_SID_FIELD_NUMBER: _ClassVar[int]
    blueprint: BlueprintRef
    init_ctx: _struct_pb2.Struct
    ttl_secs: int
    operator: OperatorOptions
    operator_sid: str
    def __init__(self, blueprint: _Optional[_Union[BlueprintRef, _Mapping]] = ..., init_ctx: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., ttl_secs: _Optional[int] = ..., operator: _Optional[_Union[OperatorOptions, _Mapping]] = ..., operator_sid: _Optional[str] = ...) -> None: ...

class StartTaskResponse(_message.Message):
    __slots__ = ("task_id",)
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    task_id: str
    def __init__(self, task_id: _Optional[str] = ...) -> None: ...

class RunTaskRequest(_message.Message):
    __slots__ = ("blueprint", "init_ctx", "ttl_secs", "operator", "operator_sid")
    BLUEPRINT_FIELD_NUMBER: _ClassVar[int]
    INIT_CTX_FIELD_NUMBER: _ClassVar[int]
    TTL_SECS_FIELD_NUMBER: _ClassVar[int]
    OPERATOR_FIELD_NUMBER: _ClassVar[int]
    OPERATOR_SID_FIELD_NUMBER: _ClassVar[int]
    blueprint: BlueprintRef
    init_ctx: _struct_pb2.Struct
    ttl_secs: int
    operator: OperatorOptions
    operator_sid: str
    def __init__(self, blueprint: _Optional[_Union[BlueprintRef, _Mapping]] = ..., init_ctx: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., ttl_secs: _Optional[int] = ..., operator: _Optional[_Union[OperatorOptions, _Mapping]] = ..., operator_sid: _Optional[str] = ...) -> None: ...

class RunTaskResponse(_message.Message):
    __slots__ = ("task",)
    TASK_FIELD_NUMBER: _ClassVar[int]
    task: Task
    def __init__(self, task: _Optional[_Union[Task, _Mapping]] = ...) -> None: ...

class TaskRun(_message.Message):
    __slots__ = ("run_id", "start", "from_step", "end", "started_at", "ended_at", "replayed_steps")
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    START_FIELD_NUMBER: _ClassVar[int]
    FROM_STEP_FIELD_NUMBER: _ClassVar[int]
    END_FIELD_NUMBER: _ClassVar[int]
    STARTED_AT_FIELD_NUMBER: _ClassVar[int]
    ENDED_AT_FIELD_NUMBER: _ClassVar[int]
    REPLAYED_STEPS_FIELD_NUMBER: _ClassVar[int]
    run_id: str
    start: RunStart
    from_step: str
    end: RunEnd
    started_at: _timestamp_pb2.Timestamp
    ended_at: _timestamp_pb2.Timestamp
    replayed_steps: int
    def __init__(self, run_id: _Optional[str] = ..., start: _Optional[_Union[RunStart, str]] = ..., from_step: _Optional[str] = ..., end: _Optional[_Union[RunEnd, str]] = ..., started_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., ended_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., replayed_steps: _Optional[int] = ...) -> None: ...

class Task(_message.Message):
    __slots__ = ("task_id", "state", "final_ctx", "error", "bound_version", "effective_ttl_secs", "ttl_source", "created_at", "finished_at", "blueprint_id", "operator_sid", "step_ids", "step_count", "runs")
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    FINAL_CTX_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    BOUND_VERSION_FIELD_NUMBER: _ClassVar[int]
    EFFECTIVE_TTL_SECS_FIELD_NUMBER: _ClassVar[int]
    TTL_SOURCE_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    FINISHED_AT_FIELD_NUMBER: _ClassVar[int]
    BLUEPRINT_ID_FIELD_NUMBER: _ClassVar[int]
    OPERATOR_SID_FIELD_NUMBER: _ClassVar[int]
    STEP_IDS_FIELD_NUMBER: _ClassVar[int]
    STEP_COUNT_FIELD_NUMBER: _ClassVar[int]
    RUNS_FIELD_NUMBER: _ClassVar[int]
    task_id: str
    state: TaskState
    final_ctx: _struct_pb2.Value
    error: str
    bound_version: str
    effective_ttl_secs: int
    ttl_source: TtlSource
    created_at: _timestamp_pb2.Timestamp
    finished_at: _timestamp_pb2.Timestamp
    blueprint_id: str
    operator_sid: str
    step_ids: _containers.RepeatedScalarFieldContainer[str]
    step_count: int
    runs: _containers.RepeatedCompositeFieldContainer[TaskRun]
    def __init__(self, task_id: _Optional[str] = ..., state: _Optional[_Union[TaskState, str]] = ..., final_ctx: _Optional[_Union[_struct_pb2.Value, _Mapping]] = ..., error: _Optional[str] = ..., bound_version: _Optional[str] = ..., effective_ttl_secs: _Optional[int] = ..., ttl_source: _Optional[_Union[TtlSource, str]] = ..., created_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., finished_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., blueprint_id: _Optional[str] = ..., operator_sid: _Optional[str] = ..., step_ids: _Optional[_Iterable[str]] = ..., step_count: _Optional[int] = ..., runs: _Optional[_Iterable[_Union[TaskRun, _Mapping]]] = ...) -> None: ...

class GetTaskRequest(_message.Message):
    __slots__ = ("task_id",)
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    task_id: str
    def __init__(self, task_id: _Optional[str] = ...) -> None: ...

class GetTaskResponse(_message.Message):
    __slots__ = ("task",)
    TASK_FIELD_NUMBER: _ClassVar[int]
    task: Task
    def __init__(self, task: _Optional[_Union[Task, _Mapping]] = ...) -> None: ...

class ListTasksRequest(_message.Message):
    __slots__ = ("state", "limit", "page_size", "page_token")
    STATE_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    state: TaskState
    limit: int
    page_size: int
    page_token: str
    def __init__(self, state: _Optional[_Union[TaskState, str]] = ..., limit: _Optional[int] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListTasksResponse(_message.Message):
    __slots__ = ("tasks", "next_page_token")
    TASKS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    tasks: _containers.RepeatedCompositeFieldContainer[Task]
    next_page_token: str
    def __init__(self, tasks: _Optional[_Iterable[_Union[Task, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class WatchTaskRequest(_message.Message):
    __slots__ = ("task_id",)
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    task_id: str
    def __init__(self, task_id: _Optional[str] = ...) -> None: ...

class WatchTaskResponse(_message.Message):
    __slots__ = ("event",)
    EVENT_FIELD_NUMBER: _ClassVar[int]
    event: TaskEvent
    def __init__(self, event: _Optional[_Union[TaskEvent, _Mapping]] = ...) -> None: ...

class TaskEvent(_message.Message):
    __slots__ = ("seq", "at", "task_id", "started", "step_dispatched", "step_finished", "completed", "failed", "cancelled", "interrupted", "run_started")
    SEQ_FIELD_NUMBER: _ClassVar[int]
    AT_FIELD_NUMBER: _ClassVar[int]
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    STARTED_FIELD_NUMBER: _ClassVar[int]
    STEP_DISPATCHED_FIELD_NUMBER: _ClassVar[int]
    STEP_FINISHED_FIELD_NUMBER: _ClassVar[int]
    COMPLETED_FIELD_NUMBER: _ClassVar[int]
    FAILED_FIELD_NUMBER: _ClassVar[int]
    CANCELLED_FIELD_NUMBER: _ClassVar[int]
    INTERRUPTED_FIELD_NUMBER: _ClassVar[int]
    RUN_STARTED_FIELD_NUMBER: _ClassVar[int]
    seq: int
    at: _timestamp_pb2.Timestamp
    task_id: str
    started: TaskStarted
    step_dispatched: StepDispatched
    step_finished: StepFinished
    completed: TaskCompleted
    failed: TaskFailed
    cancelled: TaskCancelled
    interrupted: TaskInterrupted
    run_started: TaskRunStarted
    def __init__(self, seq: _Optional[int] = ..., at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., task_id: _Optional[str] = ..., started: _Optional[_Union[TaskStarted, _Mapping]] = ..., step_dispatched: _Optional[_Union[StepDispatched, _Mapping]] = ..., step_finished: _Optional[_Union[StepFinished, _Mapping]] = ..., completed: _Optional[_Union[TaskCompleted, _Mapping]] = ..., failed: _Optional[_Union[TaskFailed, _Mapping]] = ..., cancelled: _Optional[_Union[TaskCancelled, _Mapping]] = ..., interrupted: _Optional[_Union[TaskInterrupted, _Mapping]] = ..., run_started: _Optional[_Union[TaskRunStarted, _Mapping]] = ...) -> None: ...

class TaskInterrupted(_message.Message):
    __slots__ = ("reason",)
    REASON_FIELD_NUMBER: _ClassVar[int]
    reason: str
    def __init__(self, reason: _Optional[str] = ...) -> None: ...

class TaskRunStarted(_message.Message):
    __slots__ = ("start", "from_step", "replayed_steps")
    START_FIELD_NUMBER: _ClassVar[int]
    FROM_STEP_FIELD_NUMBER: _ClassVar[int]
    REPLAYED_STEPS_FIELD_NUMBER: _ClassVar[int]
    start: RunStart
    from_step: str
    replayed_steps: int
    def __init__(self, start: _Optional[_Union[RunStart, str]] = ..., from_step: _Optional[str] = ..., replayed_steps: _Optional[int] = ...) -> None: ...

class TaskStarted(_message.Message):
    __slots__ = ("blueprint_id", "bound_version")
    BLUEPRINT_ID_FIELD_NUMBER: _ClassVar[int]
    BOUND_VERSION_FIELD_NUMBER: _ClassVar[int]
    blueprint_id: str
    bound_version: str
    def __init__(self, blueprint_id: _Optional[str] = ..., bound_version: _Optional[str] = ...) -> None: ...

class StepDispatched(_message.Message):
    __slots__ = ("step_id", "agent")
    STEP_ID_FIELD_NUMBER: _ClassVar[int]
    AGENT_FIELD_NUMBER: _ClassVar[int]
    step_id: str
    agent: str
    def __init__(self, step_id: _Optional[str] = ..., agent: _Optional[str] = ...) -> None: ...

class StepFinished(_message.Message):
    __slots__ = ("step_id", "ok", "result")
    STEP_ID_FIELD_NUMBER: _ClassVar[int]
    OK_FIELD_NUMBER: _ClassVar[int]
    RESULT_FIELD_NUMBER: _ClassVar[int]
    step_id: str
    ok: bool
    result: _struct_pb2.Value
    def __init__(self, step_id: _Optional[str] = ..., ok: bool = ..., result: _Optional[_Union[_struct_pb2.Value, _Mapping]] = ...) -> None: ...

class TaskCompleted(_message.Message):
    __slots__ = ("final_ctx",)
    FINAL_CTX_FIELD_NUMBER: _ClassVar[int]
    final_ctx: _struct_pb2.Value
    def __init__(self, final_ctx: _Optional[_Union[_struct_pb2.Value, _Mapping]] = ...) -> None: ...

class TaskFailed(_message.Message):
    __slots__ = ("error",)
    ERROR_FIELD_NUMBER: _ClassVar[int]
    error: str
    def __init__(self, error: _Optional[str] = ...) -> None: ...

class TaskCancelled(_message.Message):
    __slots__ = ("reason",)
    REASON_FIELD_NUMBER: _ClassVar[int]
    reason: str
    def __init__(self, reason: _Optional[str] = ...) -> None: ...

class CancelTaskRequest(_message.Message):
    __slots__ = ("task_id", "reason")
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    task_id: str
    reason: str
    def __init__(self, task_id: _Optional[str] = ..., reason: _Optional[str] = ...) -> None: ...

class CancelTaskResponse(_message.Message):
    __slots__ = ("task",)
    TASK_FIELD_NUMBER: _ClassVar[int]
    task: Task
    def __init__(self, task: _Optional[_Union[Task, _Mapping]] = ...) -> None: ...

class ResumeTaskRequest(_message.Message):
    __slots__ = ("task_id",)
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    task_id: str
    def __init__(self, task_id: _Optional[str] = ...) -> None: ...

class ResumeTaskResponse(_message.Message):
    __slots__ = ("task",)
    TASK_FIELD_NUMBER: _ClassVar[int]
    task: Task
    def __init__(self, task: _Optional[_Union[Task, _Mapping]] = ...) -> None: ...

class RerunTaskRequest(_message.Message):
    __slots__ = ("task_id", "from_step")
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    FROM_STEP_FIELD_NUMBER: _ClassVar[int]
    task_id: str
    from_step: str
    def __init__(self, task_id: _Optional[str] = ..., from_step: _Optional[str] = ...) -> None: ...

class RerunTaskResponse(_message.Message):
    __slots__ = ("task",)
    TASK_FIELD_NUMBER: _ClassVar[int]
    task: Task
    def __init__(self, task: _Optional[_Union[Task, _Mapping]] = ...) -> None: ...
