"""Runs one genmedia gRPC process: server, health, reflection, metrics, shutdown.

Every process's ``__main__`` builds its servicers and hands them to
:func:`run_server`, which owns the lifecycle:

start metrics -> bind gRPC -> SERVING once ready -> (SIGTERM) NOT_SERVING, health watches end ->
``server.stop(grace)`` -> close upstream clients -> flush the audit trail.

The readiness watcher is supervised (services/common/supervision.py): it is
restarted, logged and counted if it ever fails. ``GENMEDIA_ASYNCIO_DEBUG_SLOW_MS``
(a diagnostic for the tests, not a setting) runs the event loop in asyncio's
debug mode, which logs every callback that holds the loop longer than that,
and logs each callback that used that much CPU itself (see _log_cpu_heavy_callbacks).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from grpc import aio
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from prometheus_client import start_http_server

from services.common import audit, metrics, tracing
from services.common.health import StoppableHealthServicer
from services.common.interceptor import ServerCallInterceptor
from services.common.registry import ProcessSpec
from services.common.request_context import configure_logging
from services.common.settings import ServerSettings
from services.common.supervision import supervise
from services.common.tls import server_credentials

logger = logging.getLogger(__name__)

ReadinessCheck = Callable[[], Awaitable[bool]]
ASYNCIO_DEBUG_ENV = "GENMEDIA_ASYNCIO_DEBUG_SLOW_MS"
"""Diagnostics: asyncio debug mode, logging callbacks slower than this many milliseconds."""
READINESS_WATCHER = "readiness watcher"


def _message_limits(settings: ServerSettings) -> list[tuple[str, int]]:
    return [
        ("grpc.max_send_message_length", settings.max_message_bytes),
        ("grpc.max_receive_message_length", settings.max_message_bytes),
    ]


# Pings every 30 s keep idle connections alive through load balancers that
# drop them after a few minutes; both ends must agree on the rate.
LIVENESS_SERVICE = "liveness"
"""Health service name that is SERVING for as long as the process runs (until shutdown)."""
KEEPALIVE_TIME_MS = 30_000
KEEPALIVE_TIMEOUT_MS = 10_000
MAX_PING_STRIKES = 2


def server_options(settings: ServerSettings) -> list[tuple[str, int]]:
    """Large images, keepalive that tolerates our own clients' pings, and aged
    connections closed so long-lived clients spread over replicas added later."""
    return [
        *_message_limits(settings),
        ("grpc.max_connection_age_ms", int(settings.max_connection_age_s * 1000)),
        ("grpc.max_connection_age_grace_ms", int(settings.max_connection_age_grace_s * 1000)),
        ("grpc.keepalive_time_ms", KEEPALIVE_TIME_MS),
        ("grpc.keepalive_timeout_ms", KEEPALIVE_TIMEOUT_MS),
        ("grpc.keepalive_permit_without_calls", 1),
        ("grpc.http2.min_recv_ping_interval_without_data_ms", KEEPALIVE_TIME_MS // 2),
        # Two pings too many and the connection is closed (GOAWAY), as gRPC's default: a
        # client that pings in a loop must not cost the server for free.
        ("grpc.http2.max_ping_strikes", MAX_PING_STRIKES),
        ("grpc.max_concurrent_streams", settings.max_concurrent_streams),
        # A second process on a taken port fails to bind instead of sharing it unseen.
        ("grpc.so_reuseport", 0),
    ]


def channel_options(settings: ServerSettings) -> list[tuple[str, int]]:
    """Options for channels from one genmedia process to another."""
    return [
        *_message_limits(settings),
        ("grpc.keepalive_time_ms", KEEPALIVE_TIME_MS),
        ("grpc.keepalive_timeout_ms", KEEPALIVE_TIMEOUT_MS),
        ("grpc.keepalive_permit_without_calls", 1),
        ("grpc.http2.max_pings_without_data", 0),
    ]


def _transport(settings: ServerSettings) -> str:
    if settings.tls_cert_file is None:
        return "plaintext"
    return "mutual TLS" if settings.tls_client_ca_file else "TLS"


@dataclass
class ServedProcess:
    """What a process contributes to the generic lifecycle."""

    service_names: Sequence[str]
    register: Callable[[aio.Server], None]
    readiness: dict[str, ReadinessCheck] = field(default_factory=dict)
    """Per gRPC service, a check that says whether it can serve right now."""
    on_close: Callable[[], Awaitable[None]] | None = None
    trust_caller_header: bool = True
    """Backends believe the request id and key name the gateway passes on; the gateway itself
    mints request ids and keeps a caller's x-request-id as the correlation id."""
    doors: Sequence[Door] = ()
    """More listeners than the gRPC port (the gateway's HTTP door): started after it, and
    stopped before it with the same grace."""


class Door(Protocol):
    """Another listener of the process, serving the same services another way."""

    protocol: str
    """Its value of the RED metrics' ``protocol`` label."""

    async def start(self) -> None: ...

    async def stop(self, grace_s: float) -> None: ...


@dataclass(frozen=True)
class _Readiness:
    ready: bool
    reason: str = ""
    """Why not, for the log."""
    cause: str = ""
    """The kind of reason (an exception's type): a change of it is logged, not each poll."""
    error: Exception | None = None


async def _check(check: ReadinessCheck | None) -> _Readiness:
    if check is None:
        return _Readiness(True)
    try:
        ready = await check()
    except Exception as exc:  # noqa: BLE001 - an unreachable upstream is "not ready", with a reason
        reason = f"readiness check failed: {type(exc).__name__}: {exc}"
        return _Readiness(False, reason, type(exc).__name__, exc)
    return _Readiness(True) if ready else _Readiness(False, "its upstream is not ready")


async def _watch_readiness(
    process: ServedProcess, health_servicer: health.aio.HealthServicer, poll_s: float
) -> None:
    """Keeps each service's health status in step with its upstream."""
    serving = health_pb2.HealthCheckResponse.SERVING
    not_serving = health_pb2.HealthCheckResponse.NOT_SERVING
    last: dict[str, _Readiness] = {}
    while True:
        for name in process.service_names:
            now = await _check(process.readiness.get(name))
            _log_change(name, last.get(name), now)
            last[name] = now
            await health_servicer.set(name, serving if now.ready else not_serving)
            metrics.serving.labels(name).set(1 if now.ready else 0)
        overall = all(name in last and last[name].ready for name in process.service_names)
        await health_servicer.set("", serving if overall else not_serving)
        await asyncio.sleep(poll_s)


def start_readiness_watcher(
    process: ServedProcess, health_servicer: health.aio.HealthServicer, poll_s: float
) -> asyncio.Task[None]:
    """The supervised readiness watcher: a bug in it restarts it, never freezes health."""
    return supervise(READINESS_WATCHER, lambda: _watch_readiness(process, health_servicer, poll_s))


def _log_change(name: str, before: _Readiness | None, now: _Readiness) -> None:
    """One line per change of status or of the kind of reason, never one per poll."""
    if before is not None and (before.ready, before.cause) == (now.ready, now.cause):
        return
    if now.ready:
        logger.info("%s is SERVING", name)
    elif before is None and not now.cause:
        logger.info("%s is NOT_SERVING: %s", name, now.reason)  # starting, upstream not up yet
    else:
        logger.warning("%s is NOT_SERVING: %s", name, now.reason, exc_info=now.error)


def _asyncio_debug(loop: asyncio.AbstractEventLoop) -> None:
    """With GENMEDIA_ASYNCIO_DEBUG_SLOW_MS set, asyncio logs every slower callback."""
    slow_ms = os.environ.get(ASYNCIO_DEBUG_ENV, "")
    if not slow_ms:
        return
    slow_s = float(slow_ms) / 1000
    loop.set_debug(True)
    loop.slow_callback_duration = slow_s
    _log_cpu_heavy_callbacks(slow_s)
    logger.warning(
        "asyncio debug mode: callbacks over %s ms are logged (%s)", slow_ms, ASYNCIO_DEBUG_ENV
    )


def _log_cpu_heavy_callbacks(slow_s: float) -> None:
    """Logs each loop callback that used ``slow_s`` of the loop thread's CPU.

    Debug mode's warnings measure wall time, which also counts time the thread was not
    running at all: on a busy host a process is descheduled for tens of milliseconds
    whatever it runs. CPU time tells a callback that holds the loop with its own work
    (tokenizing, hashing, writing) from one that waited for a CPU. Diagnostics only: it
    wraps asyncio's Handle._run for the whole process.
    """
    run = asyncio.Handle._run

    def timed(handle: asyncio.Handle) -> None:
        wall, cpu = time.perf_counter(), time.thread_time()
        run(handle)
        used = time.thread_time() - cpu
        if used >= slow_s:
            logger.warning(
                "callback used %.3f s of CPU (%.3f s wall): %r",
                used,
                time.perf_counter() - wall,
                handle,
            )

    asyncio.Handle._run = timed  # type: ignore[method-assign]


def set_up_process(process: ProcessSpec, settings: ServerSettings) -> None:
    """Logging and tracing, as every process starts them."""
    configure_logging(settings.log_level.value, settings.log_format.value)
    tracing.setup(process.name, settings.otlp_endpoint)


async def run_server(settings: ServerSettings, process: ServedProcess) -> None:
    """Serves until SIGTERM or SIGINT, then shuts down gracefully."""
    _asyncio_debug(asyncio.get_running_loop())
    start_http_server(settings.metrics_port, addr=settings.host.strip("[]") or "::")
    server = aio.server(
        interceptors=[
            *tracing.server_interceptors(),
            ServerCallInterceptor(process.trust_caller_header),
        ],
        options=server_options(settings),
    )
    process.register(server)
    metrics.create_server_series(
        process.service_names, ("grpc", *(door.protocol for door in process.doors))
    )

    health_servicer = StoppableHealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    for name in ("", *process.service_names):
        await health_servicer.set(name, health_pb2.HealthCheckResponse.NOT_SERVING)
    # SERVING while the process answers at all, whatever its upstreams say:
    # what a liveness probe should ask, so a Triton outage never restarts it.
    await health_servicer.set(LIVENESS_SERVICE, health_pb2.HealthCheckResponse.SERVING)
    reflection.enable_server_reflection(
        (*process.service_names, health.SERVICE_NAME, reflection.SERVICE_NAME), server
    )

    address = f"{settings.host}:{settings.grpc_port}"
    credentials = server_credentials(
        settings.tls_cert_file, settings.tls_key_file, settings.tls_client_ca_file
    )
    if credentials is None:
        bound = server.add_insecure_port(address)
    else:
        bound = server.add_secure_port(address, credentials)
    if bound == 0:
        raise SystemExit(f"cannot listen on {address}")
    await server.start()
    for door in process.doors:
        await door.start()
    if settings.development_mode:
        logger.warning(
            "DEVELOPMENT MODE (GENMEDIA_DEVELOPMENT_MODE=true): public development watermark "
            "keys are allowed, so anyone could forge or strip the marks. Never in front of users."
        )
    logger.info(
        "serving %s on %s (%s), metrics on :%d",
        ", ".join(process.service_names),
        address,
        _transport(settings),
        settings.metrics_port,
    )

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    watcher = start_readiness_watcher(process, health_servicer, settings.health_poll_s)

    await stop.wait()
    logger.info(
        "shutting down: NOT_SERVING, %.1f s grace for in-flight calls", settings.shutdown_grace_s
    )
    watcher.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await watcher
    await health_servicer.stop_watches()
    await asyncio.gather(
        server.stop(settings.shutdown_grace_s),
        *(door.stop(settings.shutdown_grace_s) for door in process.doors),
    )
    if process.on_close is not None:
        await process.on_close()
    # Every event of the calls that just ended is written before the process exits.
    await asyncio.to_thread(audit.close_all)
    tracing.shutdown()
    logger.info("stopped")
