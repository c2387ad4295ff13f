"""The one error type the SDK raises."""

from __future__ import annotations

from typing import Optional

import grpc


class OperatorError(Exception):
    """The session cannot be served: a wrong token, an unknown sid, a refused hello.

    ``code`` is the gRPC status that said so (None when the cause was not a status).
    """

    def __init__(self, message: str, code: Optional[grpc.StatusCode] = None) -> None:
        super().__init__(f"{code.name}: {message}" if code is not None else message)
        self.code = code
