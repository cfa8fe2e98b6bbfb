"""Forwarding of the public API to the backends.

For every method of every backend service the gateway registers a handler
that works on raw bytes: the request is forwarded as received and the
responses are passed back as received, never parsed and re-serialised
(only the few small request fields a daily budget needs are read). Each call

1. is authenticated and admitted (key, service access, quotas, load);
2. goes to one healthy replica (round robin) with the caller's remaining
   deadline and request id; UNAVAILABLE before any response is retried on
   another replica with jittered exponential backoff, within the backend's
   retry budget and the deadline;
3. is cancelled downstream when the caller cancels or goes away;
4. charges what the backend reports it generated to the key's budget.

Errors a backend raised itself (its trailing metadata carries its request
id) reach the caller as sent; errors of the connection to it (gRPC's own,
naming addresses) reach the caller as a plain sentence, their detail logged.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import random
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import grpc
from grpc import aio

from services.common import api, tracing
from services.common.coalesce import coalesced
from services.common.errors import RETRY_AFTER_HEADER, GenmediaError, Unavailable, UpstreamError
from services.common.metrics import RedChildren, grpc_type_of
from services.common.request_context import (
    CALLER_HEADER,
    CORRELATION_ID_HEADER,
    REQUEST_ID_HEADER,
    add_trailing_metadata,
    caller_var,
    correlation_id_var,
    current_request_id,
)
from services.common.usage import USAGE_HEADER, Usage
from services.gateway import metrics
from services.gateway.auth import OPEN_MODE_CALLER, Authenticator
from services.gateway.backends import BackendPool, Replica
from services.gateway.coalescing import Merge, merges
from services.gateway.estimates import (
    Estimator,
    metered,
    streamed_usage,
    units,
    usage_so_far,
)
from services.gateway.keys import KeyPolicy
from services.gateway.quotas import Quotas, Ticket

NO_USAGE = Usage()
logger = logging.getLogger(__name__)

PASSED_BACK = (RETRY_AFTER_HEADER,)
"""Backend trailing metadata handed on to the caller (besides usage)."""

_CONNECTION_ERRORS = {
    grpc.StatusCode.UNAVAILABLE: "the {backend} service is unavailable; retry later",
    grpc.StatusCode.DEADLINE_EXCEEDED: "the deadline passed before the {backend} service answered",
    grpc.StatusCode.RESOURCE_EXHAUSTED: "a message of this call is over the message size limit "
    "between the gateway and the {backend} service",
}
"""What the caller reads when the call failed on the way, not in the backend."""


@dataclass(frozen=True)
class RetryPolicy:
    max_attempts: int = 3
    initial_backoff_s: float = 0.05
    max_backoff_s: float = 1.0

    def backoff_s(self, attempt: int) -> float:
        """Full jitter: uniform in [0, min(max, initial * 2^(attempt-1))]."""
        return random.uniform(
            0, min(self.max_backoff_s, self.initial_backoff_s * 2 ** (attempt - 1))
        )


@dataclass(frozen=True)
class Route:
    path: str
    grpc_service: str
    pool: BackendPool
    client: RedChildren
    """The grpc_client_* children of this method (one per attempt)."""
    units: tuple[str, ...] = ()
    """The daily budgets its calls draw on (the backend's registry entry)."""
    merge: Merge | None = None
    """How its stream's messages that wait for a slow caller merge, if they may."""


class Forwarder:
    """Admission, routing and retries shared by every forwarded method."""

    def __init__(
        self,
        authenticator: Authenticator,
        quotas: Quotas,
        retry: RetryPolicy,
        default_deadline_s: float,
        estimator: Estimator | None = None,
        charge_every_s: float = 5.0,
    ) -> None:
        self._charge_every_s = charge_every_s
        self._authenticator = authenticator
        self._quotas = quotas
        self._retry = retry
        self._default_deadline_s = default_deadline_s
        self._estimator = estimator or Estimator()
        self._units: dict[tuple[str, str], Any] = {}

    # -- admission ---------------------------------------------------------

    async def admit(
        self, route: Route, request: bytes, context: aio.ServicerContext, deadline: float
    ) -> Ticket:
        try:
            policy = self._authenticator.authenticate(context.invocation_metadata())
            caller_var.set(policy.name if policy is not None else OPEN_MODE_CALLER)
            self._authenticator.authorize(policy, route.grpc_service)
            estimate = await self._estimate(route, request, policy)
            return await self._quotas.admit(
                policy, estimate, route.units, deadline - time.monotonic()
            )
        except GenmediaError as exc:
            metrics.refused.labels(exc.code.name).inc()
            raise

    async def _estimate(self, route: Route, request: bytes, policy: KeyPolicy | None) -> Usage:
        if not route.units or policy is None or policy.daily_limit() is None:
            return Usage()
        return await self._estimator.estimate(route.path, request)

    def _count(self, usage: Usage) -> Usage:
        """Counts the units in the metrics; returns ``usage`` to charge."""
        if not usage:
            return usage
        name = caller_var.get()
        for unit in ("images", "megapixels", "tokens"):
            amount = getattr(usage, unit)
            if amount:
                child = self._units.get((name, unit))
                if child is None:
                    child = self._units[(name, unit)] = metrics.units_generated.labels(name, unit)
                child.inc(amount)
        return usage

    @staticmethod
    def _pass_usage_on(trailing: object) -> Usage | None:
        """The backend's usage trailer, handed on to the caller unchanged; None if absent."""
        for key, value in trailing or ():  # type: ignore[attr-defined]
            if key == USAGE_HEADER and isinstance(value, str):
                add_trailing_metadata(USAGE_HEADER, value)
                return Usage.parse(value)
        return None

    # -- backend calls -----------------------------------------------------

    def _metadata(self) -> tuple[tuple[str, str], ...]:
        return (
            (REQUEST_ID_HEADER, current_request_id()),
            (CALLER_HEADER, caller_var.get()),
            (CORRELATION_ID_HEADER, correlation_id_var.get()),
        )

    def _deadline(self, context: aio.ServicerContext) -> float:
        remaining = context.time_remaining()
        return time.monotonic() + (self._default_deadline_s if remaining is None else remaining)

    async def _before_retry(
        self, route: Route, attempt: int, deadline: float, error: Exception
    ) -> None:
        """Waits the backoff, or re-raises ``error`` if no retry is allowed."""
        pool = route.pool
        if attempt >= self._retry.max_attempts or not pool.retry_budget.allows_retry():
            raise error
        pause = self._retry.backoff_s(attempt)
        if time.monotonic() + pause >= deadline:
            raise error
        metrics.backend_retries.labels(pool.name).inc()
        await asyncio.sleep(pause)

    def _failed_attempt(
        self, route: Route, replica: Replica, exc: BaseException, forwarded: int
    ) -> GenmediaError:
        """The error of a failed backend call; raises it unless the call may be retried.

        Retried: UNAVAILABLE before any response message reached the caller.
        A CancelledError that is not the caller's (our channel to a retired
        replica was closed under the call) counts as UNAVAILABLE.
        """
        if isinstance(exc, asyncio.CancelledError):
            task = asyncio.current_task()
            if task is None or task.cancelling():
                raise exc  # the caller cancelled or went away
            code = grpc.StatusCode.UNAVAILABLE
            error: GenmediaError = Unavailable(
                f"the {route.pool.name} service went away during the call; retry later",
                detail=f"replica {replica.address} retired under the call",
            )
        else:
            assert isinstance(exc, aio.AioRpcError)
            code, error = exc.code(), self._upstream_error(route.pool.name, replica, exc)
        route.pool.record(replica, code)
        # Once a message has gone to the caller the call cannot start over.
        if code is not grpc.StatusCode.UNAVAILABLE or forwarded:
            raise error from None
        return error

    @staticmethod
    def _upstream_error(backend: str, replica: Replica, exc: aio.AioRpcError) -> UpstreamError:
        trailing = tuple(exc.trailing_metadata() or ())
        passed = tuple(
            (key, value) for key, value in trailing if key in PASSED_BACK and isinstance(value, str)
        )
        details = exc.details() or ""
        if any(key == REQUEST_ID_HEADER for key, _ in trailing):
            # The backend's own answer: its message is written for the caller.
            error = UpstreamError(exc.code(), details)
        else:
            # gRPC's own, on the way there: it names addresses; the log keeps it.
            template = _CONNECTION_ERRORS.get(
                exc.code(), "the call to the {backend} service failed on the way; retry later"
            )
            error = UpstreamError(
                exc.code(), template.format(backend=backend), f"{replica.address}: {details}"
            )
        error.metadata = passed
        return error

    async def _attempt(
        self,
        route: Route,
        kind: str,
        request: Any,
        deadline: float,
        tried: set[str],
        attempt: int,
    ) -> tuple[int, _Attempt]:
        """The next attempt's number and its call, to a replica not tried yet if there is
        one; while none is healthy each try counts and waits its backoff (or raises)."""
        while True:
            attempt += 1
            try:
                replica = route.pool.pick(tried)
                break
            except Unavailable as exc:
                await self._before_retry(route, attempt, deadline, exc)
        tried.add(replica.address)
        span, carrier = tracing.start_client_span(route.path, {"peer": replica.address})
        method = {"unary": replica.unary, "stream": replica.stream, "bidi": replica.bidi}[kind]
        call = method(route.path)(
            request,
            timeout=max(0.0, deadline - time.monotonic()),
            metadata=self._metadata() + carrier,
        )
        replica.in_flight += 1
        return attempt, _Attempt(route, replica, call, span, route.client.start())

    async def _retrying(
        self,
        route: Route,
        current: _Attempt,
        retryable: GenmediaError | None,
        attempt: int,
        deadline: float,
    ) -> bool:
        """After an attempt: waits the backoff and says to retry (or raises when no retry is
        left), or records the replica's success."""
        if retryable is not None:
            # Backoff outside the attempt: it is not the replica's time.
            await self._before_retry(route, attempt, deadline, retryable)
            return True
        route.pool.record(current.replica, grpc.StatusCode.OK)
        return False

    async def forward_unary(
        self, route: Route, request: bytes, context: aio.ServicerContext
    ) -> bytes:
        deadline = self._deadline(context)
        ticket = await self.admit(route, request, context, deadline)
        usage: Usage | None = None
        try:
            tried: set[str] = set()
            attempt = 0
            while True:
                attempt, current = await self._attempt(
                    route, "unary", request, deadline, tried, attempt
                )
                code, retryable = grpc.StatusCode.CANCELLED, None
                try:
                    response = await current.call
                    code = grpc.StatusCode.OK
                except (aio.AioRpcError, asyncio.CancelledError) as exc:
                    code = _code(exc)
                    retryable = self._failed_attempt(route, current.replica, exc, forwarded=0)
                finally:
                    current.end(code)
                if await self._retrying(route, current, retryable, attempt, deadline):
                    continue
                usage = self._pass_usage_on(await current.call.trailing_metadata())
                return response
        finally:
            await ticket.finish(self._count(usage or NO_USAGE))

    async def forward_stream(
        self, route: Route, request: bytes, context: aio.ServicerContext
    ) -> AsyncIterator[bytes]:
        deadline = self._deadline(context)
        ticket = await self.admit(route, request, context, deadline)
        forwarded = 0
        last: bytes | None = None
        usage: Usage | None = None
        try:
            tried: set[str] = set()
            attempt = 0
            while True:
                attempt, current = await self._attempt(
                    route, "stream", request, deadline, tried, attempt
                )
                code, retryable = grpc.StatusCode.CANCELLED, None
                stream = current.call.__aiter__()
                # Messages that wait for a slow caller go out merged (services/common/coalesce).
                messages = stream if route.merge is None else coalesced(stream, route.merge)
                try:
                    async with contextlib.aclosing(messages):
                        async for message in messages:
                            forwarded += 1
                            last = message
                            yield message
                    code = grpc.StatusCode.OK
                except (aio.AioRpcError, asyncio.CancelledError) as exc:
                    code = _code(exc)
                    retryable = self._failed_attempt(route, current.replica, exc, forwarded)
                finally:
                    current.end(code)
                if await self._retrying(route, current, retryable, attempt, deadline):
                    continue
                usage = self._pass_usage_on(await current.call.trailing_metadata())
                return
        finally:
            if usage is None and forwarded:
                # Cancelled or failed mid-stream: charge what the last message counted.
                usage = streamed_usage(route.path, last, forwarded)
            await ticket.finish(self._count(usage or NO_USAGE))

    async def forward_bidi(
        self, route: Route, requests: AsyncIterator[bytes], context: aio.ServicerContext
    ) -> AsyncIterator[bytes]:
        """A bidirectional stream, to one replica: admitted once (nothing held up front: its
        usage is what its trailer reports), never retried (the caller's messages cannot be
        sent again), each way flowing as the other side reads."""
        deadline = self._deadline(context)
        ticket = await self.admit(route, b"", context, deadline)
        usage: Usage | None = None
        running = metered().get(route.path)
        if running is not None and running.charged_as_it_goes is None:
            running = None
        last: bytes | None = None
        try:
            _, current = await self._attempt(route, "bidi", None, deadline, set(), 0)
            # The caller's messages are written here, not by gRPC's own request consumer:
            # a backend that ends the stream early (a bad frame) would make that consumer's
            # failed write the call's status (INTERNAL) instead of the backend's answer.
            writer = asyncio.create_task(_pump(requests, current.call))
            code = grpc.StatusCode.CANCELLED
            charged_at = time.monotonic()
            try:
                async for message in current.call:
                    yield message
                    if running is None:
                        continue
                    last = message
                    if time.monotonic() - charged_at >= self._charge_every_s:
                        so_far = usage_so_far(running, message)
                        if so_far is not None:  # a video's chunks do not carry it
                            charged_at = time.monotonic()
                            await self._charge_so_far(ticket, so_far)
                code = grpc.StatusCode.OK
            except (aio.AioRpcError, asyncio.CancelledError) as exc:
                code = _code(exc)
                refused = writer.result() if writer.done() and not writer.cancelled() else None
                if refused is not None:
                    code = refused.code
                    raise refused from None  # the caller sent a message that did not decode
                if isinstance(exc, aio.AioRpcError):  # the frames answered before it are owed
                    usage = self._pass_usage_on(exc.trailing_metadata())
                self._failed_attempt(route, current.replica, exc, forwarded=1)
            finally:
                writer.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await writer
                current.end(code)
            route.pool.record(current.replica, grpc.StatusCode.OK)
            usage = self._pass_usage_on(await current.call.trailing_metadata())
        finally:
            if usage is None and running is not None and last is not None:
                usage = usage_so_far(running, last)  # ended without its trailer
            await ticket.finish(self._count(usage or NO_USAGE))

    async def _charge_so_far(self, ticket: Ticket, usage: Usage) -> None:
        try:
            await ticket.charge_so_far(usage)
        except GenmediaError as exc:
            metrics.refused.labels(exc.code.name).inc()
            raise


async def _pump(requests: AsyncIterator[bytes], call: Any) -> GenmediaError | None:
    """The caller's messages to the backend, until either side is done; a caller's message
    that did not decode ends the call and is returned, for the caller's answer."""
    try:
        async for message in requests:
            await call.write(message)
        await call.done_writing()
    except (asyncio.InvalidStateError, aio.AioRpcError, aio.UsageError):
        pass  # the backend ended the call: its status is the answer
    except GenmediaError as refused:
        call.cancel()
        return refused
    except Exception:  # a bug here must end the backend call, not leave it waiting
        logger.exception("forwarding a client stream to the backend failed")
        call.cancel()
    return None


@dataclass
class _Attempt:
    """One call to one replica: counted in flight and in the metrics, traced, until end()."""

    route: Route
    replica: Replica
    call: Any
    span: Any
    started: float

    def end(self, code: grpc.StatusCode) -> None:
        self.replica.in_flight -= 1
        self.route.client.finish(self.started, code)
        tracing.end_span(self.span, code.name)
        self.call.cancel()  # no-op once done; stops the backend if we were cancelled


def _code(exc: BaseException) -> grpc.StatusCode:
    if isinstance(exc, aio.AioRpcError):
        return exc.code()
    return grpc.StatusCode.CANCELLED


def method_routes(service_name: str, pool: BackendPool) -> dict[str, Route]:
    """A route to ``pool`` for every method of ``service_name``, by gRPC path."""
    service = api.service(service_name)
    routes: dict[str, Route] = {}
    for method in service.methods:
        if method.client_streaming and not method.server_streaming:
            raise ValueError(f"{api.path(method)}: client-only streams are not part of the API")
        grpc_type = grpc_type_of(method)
        path = api.path(method)
        routes[path] = Route(
            path,
            service.full_name,
            pool,
            RedChildren(metrics.CLIENT, service.full_name, method.name, grpc_type),
            units(path),
            merges().get(path),
        )
    return routes


def forwarding_handler(
    service_name: str, routes: dict[str, Route], forwarder: Forwarder
) -> grpc.GenericRpcHandler:
    """A handler serving ``service_name`` by forwarding each call along its route."""
    handlers: dict[str, grpc.RpcMethodHandler] = {}
    for method in api.service(service_name).methods:
        route = routes[api.path(method)]
        if method.client_streaming:
            handlers[method.name] = grpc.stream_stream_rpc_method_handler(
                functools.partial(forwarder.forward_bidi, route)
            )
        elif method.server_streaming:
            # partial keeps forward_stream recognisable as an async generator function.
            handlers[method.name] = grpc.unary_stream_rpc_method_handler(
                functools.partial(forwarder.forward_stream, route)
            )
        else:
            handlers[method.name] = grpc.unary_unary_rpc_method_handler(
                functools.partial(forwarder.forward_unary, route)
            )
    return grpc.method_handlers_generic_handler(service_name, handlers)
