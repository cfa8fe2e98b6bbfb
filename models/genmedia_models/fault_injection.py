"""Test-only faults inside a model, for the fault tests.

``test_delay_ms`` (a config parameter, 0 in production) holds every
``execute()`` that long before the model runs, the way a model on an
overloaded GPU would. The hold ends early once every request of the batch is
cancelled: a slow model must still notice callers that gave up, which is
what the fault tests check (tests/integration/test_faults.py).

``test_fail_step`` (gpt2 only; 0, off, in production) makes the Nth decode
step of the model's loop raise, once: the loop must end every stream it holds
with an error and serve the next request (tests/integration/test_loop_faults.py).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from genmedia_models.weights import model_parameter

DELAY_PARAMETER = "test_delay_ms"
FAIL_STEP_PARAMETER = "test_fail_step"
# How often a held batch asks whether its callers are still there.
POLL_S = 0.01


@dataclass(frozen=True)
class InjectedDelay:
    seconds: float = 0.0

    @classmethod
    def from_config(cls, model_config: Mapping[str, Any]) -> InjectedDelay:
        text = model_parameter(model_config, DELAY_PARAMETER) or "0"
        try:
            milliseconds = float(text)
        except ValueError:
            milliseconds = -1.0
        if not 0 <= milliseconds <= 600_000:
            raise ValueError(
                f'parameter "{DELAY_PARAMETER}" is {text!r}; it must be 0..600000 milliseconds'
            )
        return cls(milliseconds / 1000)

    def hold(self, all_cancelled: Callable[[], bool]) -> float:
        """Waits out the delay, or until ``all_cancelled()``; returns the seconds held."""
        if self.seconds <= 0:
            return 0.0
        started = time.monotonic()
        end = started + self.seconds
        while (now := time.monotonic()) < end and not all_cancelled():
            time.sleep(min(POLL_S, end - now))
        return time.monotonic() - started


class InjectedFault(RuntimeError):
    """The error ``test_fail_step`` raises: recognisable in logs as made on purpose."""


class InjectedStepFailure:
    """Raises :class:`InjectedFault` at the ``at_step``-th decode step, once (0: never)."""

    def __init__(self, at_step: int = 0) -> None:
        self.at_step = at_step
        self._fired = False

    @classmethod
    def from_config(cls, model_config: Mapping[str, Any]) -> InjectedStepFailure:
        text = model_parameter(model_config, FAIL_STEP_PARAMETER) or "0"
        if not text.isdigit():
            raise ValueError(
                f'parameter "{FAIL_STEP_PARAMETER}" is {text!r}; it must be a step number '
                "(0 for none)"
            )
        return cls(int(text))

    def check(self, step: int) -> None:
        """Called before decode step ``step`` (counted from 1)."""
        if self.at_step and not self._fired and step >= self.at_step:
            self._fired = True
            raise InjectedFault(f"{FAIL_STEP_PARAMETER}: decode step {step} failed on purpose")
