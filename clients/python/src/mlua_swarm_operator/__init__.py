"""mlua-swarm-operator: write an Operator for mlua-swarm-grpc in a few lines.

    op = Operator("127.0.0.1:7777", roles=["remote"])

    @op.on_spawn
    def work(worker: Worker) -> None:
        p = worker.get_prompt()
        worker.submit(p.prompt.upper())

    op.run()

The generated stubs ship alongside as ``mlua_swarm.v1`` (``task_pb2_grpc.TaskServiceStub``
and the rest).
"""

from .backoff import Backoff
from .errors import OperatorError
from .events import Ask, Cancel, HookAfter, HookBefore, Outcome, Prompt, Welcome
from .handlers import HookDecision
from .operator import Operator
from .values import from_value, to_value
from .worker import Worker

__all__ = [
    "Ask", "Backoff", "Cancel", "HookAfter", "HookBefore", "HookDecision", "Operator",
    "OperatorError", "Outcome", "Prompt", "Welcome", "Worker", "from_value", "to_value",
]
__version__ = "0.1.0"
