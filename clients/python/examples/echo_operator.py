#!/usr/bin/env python3
"""An example operator on the SDK: approves every spawn, plays the sub-agent itself (echoes
the prompt in upper case, or --reply), answers asks with --answer.

    pip install ./clients/python
    python clients/python/examples/echo_operator.py --addr 127.0.0.1:7777 --roles remote
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from typing import Any, List, Optional

try:
    import mlua_swarm_operator  # noqa: F401
except ImportError:  # run from a checkout without installing: use ../src
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "src"))

from mlua_swarm_operator import Ask, HookBefore, Operator, OperatorError, Outcome, Worker


def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(description="Example mlua-swarm operator (Connect stream).")
    p.add_argument("--addr", default="127.0.0.1:7777", help="server address (host:port)")
    p.add_argument("--roles", default="", help="comma-separated seats to hold, e.g. remote")
    p.add_argument("--sid", help="join this existing session instead of creating one")
    p.add_argument("--token", help="the session token (with --sid)")
    p.add_argument("--reply", help="what sub-agents submit ({prompt} is replaced); "
                                   "default: the prompt in upper case")
    p.add_argument("--block-on", help="submit BLOCKED when the prompt contains this text")
    p.add_argument("--answer", default='{"advice": "proceed"}', help="JSON answer to asks")
    p.add_argument("--api-token", default=os.environ.get("MSE_API_TOKEN"),
                   help="server API token for CreateSession (env MSE_API_TOKEN)")
    p.add_argument("--keep-session", action="store_true",
                   help="do not delete a session we created when stopping")
    args = p.parse_args(argv)
    if bool(args.sid) != bool(args.token):
        p.error("--sid and --token go together")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    answer: Any = json.loads(args.answer)

    op = Operator(args.addr, roles=[r for r in args.roles.split(",") if r],
                  session=(args.sid, args.token) if args.sid else None,
                  api_token=args.api_token,
                  delete_session_on_stop=False if args.keep_session else None)

    @op.on_hook_before
    def approve(hook: HookBefore) -> bool:
        logging.info("hook_before %s: approving %s", hook.req_id, hook.agent)
        return True

    @op.on_spawn
    def work(worker: Worker) -> None:
        prompt = worker.get_prompt().prompt
        if args.block_on and args.block_on in prompt:
            worker.submit(f"blocked: {prompt}", Outcome.BLOCKED)
        elif args.reply is not None:
            worker.submit(args.reply.replace("{prompt}", prompt))
        else:
            worker.submit(prompt.upper())

    @op.on_ask
    def advise(ask: Ask) -> Any:
        return answer

    try:
        op.start()
    except Exception as e:  # noqa: BLE001 - CreateSession failed: say so, exit 1
        print(f"CreateSession failed: {e}", file=sys.stderr)
        return 1
    print(f"session {op.sid} token {op.token}", flush=True)
    try:
        op.run()
    except OperatorError as e:
        print(f"operator failed: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
