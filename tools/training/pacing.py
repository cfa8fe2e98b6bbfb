"""Time-capped training that still finishes its learning-rate schedule.

A trainer plans a fixed number of steps (reproducible on a fast enough
machine). On a slower one, it asks at every step how many steps fit in what
is left of ``max_seconds`` at the mean pace so far, and anneals over that
many instead of being cut off mid-schedule.
"""

from __future__ import annotations

PACE_AFTER_STEPS = 10
"""Steps measured before the pace is trusted."""
TIME_SHARE = 0.97
"""Share of max_seconds training may plan to use; the rest covers saving the files."""


def steps_that_fit(
    done: int, total_steps: int, max_seconds: float, elapsed: float, loop_seconds: float
) -> int:
    """The plan after ``done`` steps: at most ``total_steps``, at least one more step.

    ``elapsed`` counts against ``max_seconds``; ``loop_seconds`` is the time the
    ``done`` steps took. Re-planned every step from the mean pace, so a burst of
    contention early on does not shorten the run for good.
    """
    if done < PACE_AFTER_STEPS:
        return total_steps
    affordable = done + int((max_seconds * TIME_SHARE - elapsed) / (loop_seconds / done))
    return min(total_steps, max(done + 1, affordable))
