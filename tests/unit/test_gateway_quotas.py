import datetime as dt
from dataclasses import replace

import grpc
import pytest

from services.common.errors import RETRY_AFTER_HEADER, ResourceExhausted
from services.common.usage import Usage
from services.gateway.keys import UNLIMITED, DailyBudget, KeyPolicy
from services.gateway.quotas import Quotas, TokenBucket, seconds_to_utc_midnight

# 2024-05-01 23:59:00 UTC: a minute before the budgets renew.
BEFORE_MIDNIGHT = dt.datetime(2024, 5, 1, 23, 59, tzinfo=dt.UTC).timestamp()


class FakeClock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def policy(
    name: str = "alice",
    rate_per_s: float | None = None,
    burst: int = 1,
    max_concurrent: int | None = None,
    daily: DailyBudget = UNLIMITED,
) -> KeyPolicy:
    services = frozenset({"genmedia.v1.TextGenerationService"})
    return KeyPolicy(name, services, rate_per_s, burst, max_concurrent, daily)


def retry_after_ms(error: pytest.ExceptionInfo[ResourceExhausted]) -> int:
    assert error.value.code == grpc.StatusCode.RESOURCE_EXHAUSTED
    ((header, value),) = error.value.metadata
    assert header == RETRY_AFTER_HEADER == "retry-after-ms"
    return int(value)


@pytest.fixture
def monotonic() -> FakeClock:
    return FakeClock(1000.0)


@pytest.fixture
def wall() -> FakeClock:
    return FakeClock(BEFORE_MIDNIGHT - 3600)


@pytest.fixture
def quotas(monotonic: FakeClock, wall: FakeClock) -> Quotas:
    return Quotas(max_in_flight=100, overload_retry_after_s=0.5, monotonic=monotonic, wall=wall)


# -- TokenBucket -------------------------------------------------------------


def test_bucket_gives_its_burst_then_says_how_long_to_wait() -> None:
    bucket = TokenBucket(rate=4, capacity=3, now=0.0)
    assert [bucket.take(0.0) for _ in range(3)] == [0.0, 0.0, 0.0]
    assert bucket.take(0.0) == pytest.approx(0.25)
    assert bucket.take(0.0) == pytest.approx(0.25)  # a refusal takes nothing
    assert bucket.take(0.125) == pytest.approx(0.125)  # half a token is there


def test_bucket_refills_at_its_rate_up_to_its_capacity() -> None:
    bucket = TokenBucket(rate=2, capacity=2, now=0.0)
    bucket.take(0.0)
    bucket.take(0.0)
    assert bucket.take(0.5) == 0.0  # one token after half a second
    assert bucket.take(0.5) > 0
    # A long pause saves up only `capacity` tokens.
    assert [bucket.take(100.0) for _ in range(2)] == [0.0, 0.0]
    assert bucket.take(100.0) == pytest.approx(0.5)


# -- Quotas: gateway-wide in-flight limit ------------------------------------


def test_global_in_flight_limit_sheds_load(monotonic: FakeClock, wall: FakeClock) -> None:
    quotas = Quotas(max_in_flight=2, overload_retry_after_s=0.5, monotonic=monotonic, wall=wall)
    first, _ = quotas.admit(None), quotas.admit(policy())
    with pytest.raises(ResourceExhausted) as error:
        quotas.admit(None)
    assert retry_after_ms(error) == 500
    assert "limit of 2 calls" in error.value.message
    first.release()
    assert quotas.in_flight == 1
    quotas.admit(None)
    assert quotas.in_flight == 2


def test_releasing_twice_is_harmless(quotas: Quotas) -> None:
    alice = policy(max_concurrent=1)
    ticket = quotas.admit(alice)
    ticket.release()
    ticket.release()
    assert quotas.in_flight == 0
    quotas.admit(alice)
    # Had the second release counted, alice would have room for another call.
    with pytest.raises(ResourceExhausted):
        quotas.admit(alice)
    assert quotas.in_flight == 1


# -- Quotas: per-key concurrency and rate ------------------------------------


def test_per_key_concurrency(quotas: Quotas) -> None:
    alice = policy(max_concurrent=2)
    tickets = [quotas.admit(alice), quotas.admit(alice)]
    with pytest.raises(ResourceExhausted, match="2 calls in flight") as error:
        quotas.admit(alice)
    assert retry_after_ms(error) == 1000
    quotas.admit(policy("bob", max_concurrent=2))  # other keys are not affected
    tickets[0].release()
    quotas.admit(alice)


def test_per_key_rate_with_retry_after_of_the_bucket_wait(
    quotas: Quotas, monotonic: FakeClock
) -> None:
    alice = policy(rate_per_s=4, burst=2)
    quotas.admit(alice).release()
    quotas.admit(alice).release()
    with pytest.raises(ResourceExhausted, match="rate of 4 calls/s") as error:
        quotas.admit(alice)
    assert error.value.retry_after_s == pytest.approx(0.25)
    assert retry_after_ms(error) == 250
    quotas.admit(policy("bob", rate_per_s=4, burst=2))  # bob has his own bucket
    monotonic.advance(0.125)
    with pytest.raises(ResourceExhausted) as error:
        quotas.admit(alice)
    assert retry_after_ms(error) == 125
    monotonic.advance(0.125)
    quotas.admit(alice)


def test_refused_calls_do_not_count_in_flight(quotas: Quotas) -> None:
    alice = policy(rate_per_s=1, burst=1, max_concurrent=5)
    quotas.admit(alice)
    for _ in range(3):
        with pytest.raises(ResourceExhausted):
            quotas.admit(alice)
    assert quotas.in_flight == 1


def test_a_changed_rate_renews_the_bucket_but_keeps_the_daily_usage(quotas: Quotas) -> None:
    slow = policy(rate_per_s=1, burst=1, daily=DailyBudget(images=10))
    ticket = quotas.admit(slow, Usage(images=3))
    ticket.charge(Usage(images=3))
    ticket.release()
    with pytest.raises(ResourceExhausted, match="rate"):
        quotas.admit(slow)
    fast = replace(slow, rate_per_s=5, burst=2)
    quotas.admit(fast).release()
    quotas.admit(fast).release()
    with pytest.raises(ResourceExhausted, match="rate"):
        quotas.admit(fast)
    assert quotas.used_today("alice") == Usage(images=3)
    with pytest.raises(ResourceExhausted, match="7 of 10 left"):
        quotas.admit(fast, Usage(images=8))


# -- Quotas: daily budgets ---------------------------------------------------


def test_daily_budget_refuses_an_estimate_bigger_than_what_is_left(quotas: Quotas) -> None:
    alice = policy(daily=DailyBudget(images=10))
    ticket = quotas.admit(alice, Usage(images=4))
    ticket.charge(Usage(images=4))
    ticket.release()
    assert quotas.used_today("alice") == Usage(images=4)
    with pytest.raises(ResourceExhausted) as error:
        quotas.admit(alice, Usage(images=7))
    assert "7 image(s)" in error.value.message and "6 of 10 left" in error.value.message
    ticket = quotas.admit(alice, Usage(images=6))
    ticket.charge(Usage(images=2))
    ticket.charge(Usage(images=4))  # charges accumulate
    assert quotas.used_today("alice") == Usage(images=10)


def test_a_spent_budget_refuses_even_a_zero_estimate_until_utc_midnight(
    quotas: Quotas, wall: FakeClock
) -> None:
    alice = policy(daily=DailyBudget(tokens=100))
    ticket = quotas.admit(alice, Usage(tokens=50))
    ticket.charge(Usage(tokens=120))  # went over the estimate
    ticket.release()
    wall.now = BEFORE_MIDNIGHT
    with pytest.raises(ResourceExhausted, match="daily tokens budget") as error:
        quotas.admit(alice)
    assert "0 of 100 left" in error.value.message
    assert error.value.retry_after_s == pytest.approx(60.0)
    assert retry_after_ms(error) == 60_000
    wall.advance(59.5)
    with pytest.raises(ResourceExhausted) as error:
        quotas.admit(alice)
    assert retry_after_ms(error) == 500
    wall.advance(0.5)  # 00:00:00 UTC: a new day
    quotas.admit(alice, Usage(tokens=100))
    assert quotas.used_today("alice") == Usage()


def test_charges_after_midnight_count_towards_the_new_day(quotas: Quotas, wall: FakeClock) -> None:
    alice = policy(daily=DailyBudget(images=10))
    ticket = quotas.admit(alice, Usage(images=1))
    ticket.charge(Usage(images=9))
    wall.now = BEFORE_MIDNIGHT + 120
    ticket.charge(Usage(images=2))
    ticket.release()
    assert quotas.used_today("alice") == Usage(images=2)
    quotas.admit(alice, Usage(images=8))


def test_unlimited_units_never_refuse(quotas: Quotas) -> None:
    alice = policy(daily=DailyBudget(images=2))
    ticket = quotas.admit(alice, Usage(tokens=1e12, megapixels=1e9))
    ticket.charge(Usage(tokens=1e12, megapixels=1e9))
    ticket.release()
    quotas.admit(alice, Usage(images=2, tokens=1e12)).release()
    with pytest.raises(ResourceExhausted, match="images"):
        quotas.admit(alice, Usage(images=3))
    bob = policy("bob")  # no budget at all
    assert bob.daily_limit() is None
    for _ in range(3):
        ticket = quotas.admit(bob, Usage(images=1e9, megapixels=1e9, tokens=1e9))
        ticket.charge(Usage(images=1e9, megapixels=1e9, tokens=1e9))
        ticket.release()


def test_open_mode_has_no_per_key_limits(quotas: Quotas) -> None:
    for _ in range(50):
        ticket = quotas.admit(None, Usage(images=1e9))
        ticket.charge(Usage(images=1e9))  # nowhere to charge it: no error
    assert quotas.in_flight == 50


def test_seconds_to_utc_midnight() -> None:
    assert seconds_to_utc_midnight(BEFORE_MIDNIGHT) == pytest.approx(60.0)
    midnight = BEFORE_MIDNIGHT + 60
    assert seconds_to_utc_midnight(midnight) == pytest.approx(86400.0)


# -- services/common/usage.py ------------------------------------------------


def test_usage_header_round_trip() -> None:
    usage = Usage(images=4, megapixels=0.262144, tokens=300)
    assert usage.header_value() == "images=4,megapixels=0.262144,tokens=300"
    assert Usage.parse(usage.header_value()) == usage
    assert Usage(tokens=7).header_value() == "tokens=7"
    assert Usage().header_value() == ""
    assert Usage.parse("") == Usage()


def test_usage_parse_ignores_malformed_parts_and_clamps_negatives() -> None:
    parsed = Usage.parse(" images = 2 ,videos=5,tokens,megapixels=lots,=3,,tokens=-4")
    assert parsed == Usage(images=2, megapixels=0, tokens=0)
    assert Usage.parse("tokens=abc,tokens=12") == Usage(tokens=12)


def test_usage_arithmetic() -> None:
    assert Usage(images=1, tokens=2).times(3) == Usage(images=3, tokens=6)
    assert Usage(images=1).times(0) == Usage()
    total = Usage(images=1, megapixels=0.5) + Usage(megapixels=0.25, tokens=10)
    assert total == Usage(images=1, megapixels=0.75, tokens=10)


# -- services/common/errors.py -----------------------------------------------


@pytest.mark.parametrize(
    ("retry_after_s", "header"),
    [(0.0004, "1"), (0.0, "1"), (0.0011, "2"), (2.5, "2500")],
)
def test_retry_after_is_whole_milliseconds_and_at_least_one(
    retry_after_s: float, header: str
) -> None:
    error = ResourceExhausted("slow down", retry_after_s)
    assert error.metadata == ((RETRY_AFTER_HEADER, header),)
    assert error.retry_after_s == retry_after_s


def test_resource_exhausted_without_retry_after_has_no_metadata() -> None:
    error = ResourceExhausted("slow down")
    assert error.metadata == ()
    assert error.code == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert error.message == "slow down"


def test_a_spent_budget_only_refuses_calls_that_draw_on_it(quotas: Quotas) -> None:
    alice = policy(daily=DailyBudget(images=1, tokens=0))
    quotas.admit(alice, Usage(images=1), units=("images",)).charge(Usage(images=1))
    quotas.admit(alice, Usage(), units=()).release()  # a listing call draws on no budget
    quotas.admit(alice, Usage(), units=("megapixels",)).release()  # unlimited unit
    with pytest.raises(ResourceExhausted, match="daily images budget"):
        quotas.admit(alice, Usage(images=1), units=("images",))
    with pytest.raises(ResourceExhausted, match="daily tokens budget"):
        quotas.admit(alice, Usage(), units=("tokens",))


def test_concurrent_calls_cannot_all_pass_the_same_budget_check(quotas: Quotas) -> None:
    alice = policy(daily=DailyBudget(images=3))
    first = quotas.admit(alice, Usage(images=2), units=("images",))
    with pytest.raises(ResourceExhausted, match="calls in flight hold 2") as error:
        quotas.admit(alice, Usage(images=2), units=("images",))
    assert error.value.retry_after_s == 1.0  # not midnight: the hold ends with the call
    quotas.admit(alice, Usage(images=1), units=("images",)).release()  # 1 is still free
    first.charge(Usage(images=1))  # generated fewer than it asked for
    first.release()
    quotas.admit(alice, Usage(images=2), units=("images",)).release()  # the hold is gone
