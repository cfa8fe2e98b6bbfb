"""The JSON routes of every RPC, read from the ``google.api.http`` annotations in protos/."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from google.api import annotations_pb2
from google.protobuf.descriptor import MethodDescriptor

from services.common import api
from services.common.registry import GATEWAY


@dataclass(frozen=True)
class JsonRoute:
    verb: str
    """``GET`` or ``POST``."""
    path: str
    body: bool
    """Whether the request message comes as the JSON body (else from the query string)."""
    method: MethodDescriptor


def json_routes() -> Iterator[JsonRoute]:
    """One route per RPC of the gateway's services, client streams aside (HTTP/1.1 JSON has
    none: TranslateFrames is gRPC only); a method without an annotation is an error (a test
    keeps every other RPC reachable over HTTP)."""
    for service_name in GATEWAY.grpc_services:
        for method in api.service(service_name).methods:
            if method.client_streaming:
                continue
            rule = method.GetOptions().Extensions[annotations_pb2.http]
            verb = rule.WhichOneof("pattern")
            if verb is None:
                raise ValueError(f"{api.path(method)} has no google.api.http annotation")
            yield JsonRoute(verb.upper(), getattr(rule, verb), rule.body == "*", method)
