"""Reconnect delays: exponential with jitter."""

from __future__ import annotations

import random
from dataclasses import dataclass, field


@dataclass
class Backoff:
    """Delay before the n-th reconnect attempt in a row: ``initial * multiplier**n``, capped at
    ``maximum``, scaled by a random factor in ``[1 - jitter, 1]`` so that many operators
    cut off at once do not come back in step. ``reset()`` after a successful attach."""

    initial: float = 0.2
    maximum: float = 10.0
    multiplier: float = 2.0
    jitter: float = 0.5
    _attempt: int = field(default=0, init=False, repr=False)

    def next(self) -> float:
        """The next delay in seconds (and counts the attempt)."""
        base = min(self.maximum, self.initial * self.multiplier**self._attempt)
        self._attempt += 1
        return base * random.uniform(1.0 - self.jitter, 1.0)

    def reset(self) -> None:
        self._attempt = 0

    def after(self, retry_after: float) -> float:
        """The server's ``closing.retry_after_ms`` (in seconds) with up to 10% jitter on top."""
        return retry_after * random.uniform(1.0, 1.1)
