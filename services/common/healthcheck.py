"""A gRPC health check of a process on this host, for container HEALTHCHECKs.

Kubernetes probes speak gRPC health natively; Docker and compose need a
command, and the slim image has no grpc_health_probe binary. Plaintext only:
a process serving TLS is checked by its orchestrator's probes instead.
"""

from __future__ import annotations

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc


def is_serving(port: int, service: str = "", timeout_s: float = 3.0) -> bool:
    """True when ``localhost:port`` answers SERVING for ``service`` within the timeout."""
    with grpc.insecure_channel(f"localhost:{port}") as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        try:
            reply = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=timeout_s)
        except grpc.RpcError:
            return False
    return reply.status == health_pb2.HealthCheckResponse.SERVING
