"""The HTTP door's app and its uvicorn server on the gateway's event loop."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
from collections.abc import Iterator
from pathlib import Path

import uvicorn
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import Route

import genmedia.v1
from services.common.request_context import new_request_id
from services.gateway.http.body import DoorLimits
from services.gateway.http.errors import HttpError
from services.gateway.http.openai_api import OpenAiApi
from services.gateway.http.routes import json_routes
from services.gateway.http.rpc import PROTOCOL, Rpcs
from services.gateway.http.transcoding import Transcoder
from services.gateway.settings import GatewaySettings

logger = logging.getLogger(__name__)
OPENAPI_FILE = Path(genmedia.v1.__path__[0]) / "openapi.json"


def app(rpcs: Rpcs, settings: GatewaySettings) -> Starlette:
    limits = DoorLimits(
        settings.default_deadline_s, settings.http_max_body_bytes, settings.http_body_timeout_s
    )
    openai = OpenAiApi(rpcs, limits)
    transcoder = Transcoder(rpcs, limits)
    routes = [
        Route("/v1/models", openai.models, methods=["GET"]),
        Route("/v1/completions", openai.completions, methods=["POST"]),
        Route("/v1/chat/completions", openai.chat_completions, methods=["POST"]),
        Route("/v1/images/generations", openai.image_generations, methods=["POST"]),
        Route("/v1/images/edits", openai.image_edits, methods=["POST"]),
        Route("/openapi.json", openapi, methods=["GET"]),
        *(
            Route(route.path, transcoder.endpoint(route), methods=[route.verb])
            for route in json_routes()
        ),
    ]
    return Starlette(
        routes=routes,
        exception_handlers={HTTPException: _http_exception, Exception: _unexpected},  # type: ignore[dict-item]
    )


async def openapi(request: Request) -> Response:
    return FileResponse(OPENAPI_FILE, media_type="application/json")


async def _http_exception(request: Request, exc: HTTPException) -> Response:
    """Starlette's own 404 and 405, in the error body of the door that was asked."""
    message = (
        f"no route {request.method} {request.url.path}; GET /openapi.json lists them"
        if exc.status_code in (404, 405)
        else str(exc.detail)
    )
    return _error_response(request, HttpError(exc.status_code, message))


async def _unexpected(request: Request, exc: Exception) -> Response:
    request_id = new_request_id()
    logger.error(
        "unexpected error in %s %s [%s]", request.method, request.url.path, request_id, exc_info=exc
    )
    return _error_response(
        request,
        HttpError(500, f"internal error; quote request id {request_id} when reporting it"),
        request_id,
    )


def _error_response(request: Request, error: HttpError, request_id: str = "") -> Response:
    request_id = request_id or new_request_id()
    if request.url.path.startswith("/v1/genmedia/"):
        return error.rpc_response(request_id)
    return JSONResponse(error.openai_body(), error.status, error.headers(request_id))


class _Server(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield  # the gateway's own handlers stop both doors, gRPC's and this one


class HttpDoor:
    protocol = PROTOCOL

    def __init__(self, application: Starlette, settings: GatewaySettings) -> None:
        self._address = f"{settings.host}:{settings.http_port}"
        config = uvicorn.Config(
            application,
            host=settings.host.strip("[]") or "::",
            port=settings.http_port,
            http="httptools",
            loop="none",
            lifespan="off",
            log_config=None,
            access_log=False,
            server_header=False,
            timeout_keep_alive=int(settings.http_keep_alive_s),
            timeout_graceful_shutdown=int(settings.shutdown_grace_s),
            ssl_certfile=settings.tls_cert_file,
            ssl_keyfile=settings.tls_key_file,
            ssl_ca_certs=settings.tls_client_ca_file,
            ssl_cert_reqs=ssl.CERT_REQUIRED if settings.tls_client_ca_file else ssl.CERT_NONE,
        )
        self._server = _Server(config)
        self._task: asyncio.Task[None] | None = None
        self.scheme = "https" if settings.tls_cert_file else "http"

    async def start(self) -> None:
        self._task = asyncio.create_task(self._server.serve())
        while not self._server.started:
            if self._task.done():
                raise SystemExit(f"cannot listen for HTTP on {self._address}")
            await asyncio.sleep(0.01)
        logger.info(
            "serving HTTP (OpenAI-compatible API, JSON for every RPC) on %s://%s",
            self.scheme,
            self._address,
        )

    async def stop(self, grace_s: float) -> None:
        if self._task is None:
            return
        self._server.should_exit = True
        with contextlib.suppress(asyncio.CancelledError, SystemExit):
            await self._task
