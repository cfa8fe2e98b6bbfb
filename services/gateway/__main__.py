"""python -m services.gateway"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable

import grpc
from grpc import aio

from genmedia.v1 import provenance_pb2_grpc
from services.common.registry import BACKENDS, GATEWAY
from services.common.server import (
    ReadinessCheck,
    ServedProcess,
    channel_options,
    run_server,
    set_up_process,
)
from services.common.settings import load_settings
from services.common.supervision import supervise
from services.common.tls import channel_credentials
from services.gateway.auth import ApiKeys, Authenticator, OpenAccess
from services.gateway.backends import BackendPool, ChannelFactory, parse_targets
from services.gateway.estimates import ASK_TIMEOUT_S, Estimator, Unary
from services.gateway.keys import KeyFileError
from services.gateway.open_service import OpenServiceLimiter
from services.gateway.provenance import ProvenanceServicer, TextVerifier
from services.gateway.proxy import Forwarder, Route, forwarding_handler, method_routes
from services.gateway.quotas import Quotas
from services.gateway.settings import AccessSettings, AuthMode, BackendTls, GatewaySettings

# Reconnect to a restarted replica within seconds, not gRPC's default of up to two minutes.
RECONNECT_OPTIONS = [
    ("grpc.initial_reconnect_backoff_ms", 200),
    ("grpc.min_reconnect_backoff_ms", 200),
    ("grpc.max_reconnect_backoff_ms", 5000),
]


def channel_factory(options: list[tuple[str, int]], tls: BackendTls | None) -> ChannelFactory:
    options = [*options, *RECONNECT_OPTIONS]
    if tls is None:
        return lambda address, _host: aio.insecure_channel(address, options=options)
    credentials = channel_credentials(tls.ca_file, tls.cert_file, tls.key_file)

    def secure(address: str, host: str) -> aio.Channel:
        # Replicas are dialled by IP; their certificates name the Service.
        name = tls.server_name or host
        return aio.secure_channel(
            address,
            credentials,
            options=[*options, ("grpc.ssl_target_name_override", name)],
        )

    return secure


def authenticator(settings: AccessSettings) -> Authenticator:
    if settings.auth_mode is AuthMode.OPEN:
        return OpenAccess()
    assert settings.api_keys_file is not None  # checked by the settings
    try:
        return ApiKeys(settings.api_keys_file)
    except KeyFileError as exc:
        raise SystemExit(str(exc)) from None


def reload_keys_forever(keys: ApiKeys, interval_s: float) -> Callable[[], Awaitable[None]]:
    async def reload() -> None:
        while True:
            await asyncio.sleep(interval_s)
            keys.reload_if_changed()

    return reload


async def main() -> None:
    settings = load_settings(GatewaySettings)
    set_up_process(GATEWAY, settings)
    auth = authenticator(settings)
    try:
        key_limits = settings.key_limits()
    except ValueError as exc:
        raise SystemExit(str(exc)) from None
    await key_limits.start()
    quotas = Quotas(
        settings.max_in_flight,
        settings.overload_retry_after_s,
        key_limits,
        settings.quota_lease_margin_s,
    )
    estimator = Estimator()
    forwarder = Forwarder(
        auth,
        quotas,
        settings.retry_policy(),
        settings.default_deadline_s,
        estimator,
        settings.stream_charge_interval_s,
    )
    make_channel = channel_factory(channel_options(settings), settings.backend_tls())
    pools: list[BackendPool] = []
    handlers = []
    routes: dict[str, Route] = {}
    readiness: dict[str, ReadinessCheck] = {}
    for backend in BACKENDS:
        try:
            targets = parse_targets(settings.backend_addr(backend))
        except ValueError as exc:
            raise SystemExit(f"{backend.addr_setting}: {exc}") from None
        for service_name in backend.grpc_services:
            pool = BackendPool(
                backend.name,
                service_name,
                targets,
                make_channel,
                settings.ejection_policy(),
                settings.retry_budget(),
                settings.backend_resolve_interval_s,
                drain_max_s=settings.default_deadline_s,
            )
            await pool.start()
            pools.append(pool)
            estimator.connect(backend, _unary_caller(pool))
            service_routes = method_routes(service_name, pool)
            routes.update(service_routes)
            handlers.append(forwarding_handler(service_name, service_routes, forwarder))
            readiness[service_name] = _ready_check(pool)

    provenance = ProvenanceServicer(
        settings.c2pa_trust_anchors_file,
        auth,
        quotas,
        OpenServiceLimiter(settings.open_limits()),
        TextVerifier.from_settings(settings),
        settings.image_watermark(),
        verify_concurrency=settings.verify_concurrency,
        verify_memory_bytes=settings.verify_memory_bytes,
    )
    reloader = (
        supervise("api keys reload", reload_keys_forever(auth, settings.api_keys_reload_s))
        if isinstance(auth, ApiKeys)
        else None
    )

    async def close() -> None:
        if reloader is not None:
            reloader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reloader
        await asyncio.gather(*(pool.close() for pool in pools))
        provenance.close()
        await key_limits.close()

    doors = []
    if settings.http_port:
        # Imported only when on: a gateway without the HTTP door never loads its stack.
        from services.gateway.http.rpc import Rpcs
        from services.gateway.http.server import HttpDoor, app

        doors.append(HttpDoor(app(Rpcs(forwarder, routes, provenance), settings), settings))
    await run_server(
        settings,
        ServedProcess(
            service_names=GATEWAY.grpc_services,
            register=lambda server: register(server, handlers, provenance),
            readiness=readiness,
            on_close=close,
            trust_caller_header=False,
            doors=doors,
        ),
    )


def register(
    server: aio.Server, handlers: list[grpc.GenericRpcHandler], provenance: ProvenanceServicer
) -> None:
    server.add_generic_rpc_handlers(handlers)
    provenance_pb2_grpc.add_ProvenanceServiceServicer_to_server(provenance, server)


def _unary_caller(pool: BackendPool) -> Unary:
    """Calls a unary method of one of the pool's replicas: how the estimator asks a backend
    what its defaults are (what a field left unset will mean)."""

    async def call(path: str, request: bytes) -> bytes:
        method = pool.pick().unary(path)
        return await method(request, timeout=ASK_TIMEOUT_S)  # type: ignore[no-any-return]

    return call


def _ready_check(pool: BackendPool) -> ReadinessCheck:
    async def check() -> bool:
        return pool.ready()

    return check


if __name__ == "__main__":
    asyncio.run(main())
