"""Re-planning a time-capped training run from its pace."""

from tools.training.pacing import PACE_AFTER_STEPS, TIME_SHARE, steps_that_fit


def test_the_plan_stands_until_the_pace_is_known() -> None:
    assert steps_that_fit(PACE_AFTER_STEPS - 1, 500, 10.0, 9.0, 9.0) == 500


def test_a_slow_pace_shortens_the_plan_and_a_faster_one_grows_it_back() -> None:
    # 1 s a step, 100 s cap: about 97 steps fit.
    slow = steps_that_fit(20, 500, 100.0, 20.0, 20.0)
    assert slow == int(100.0 * TIME_SHARE)
    faster = steps_that_fit(40, 500, 100.0, 30.0, 30.0)  # pace now 0.75 s a step
    assert slow < faster <= 500
    assert steps_that_fit(20, 50, 100.0, 2.0, 2.0) == 50  # never past the plan


def test_over_time_it_still_allows_one_more_step() -> None:
    assert steps_that_fit(30, 500, 10.0, 12.0, 12.0) == 31
