"""genmedia's API as the proto descriptors describe it, found from the process registry.

Method paths, request and response classes are read from the generated modules the
registry names, never written by hand: a method renamed in a .proto cannot leave a stale
path behind, and a new backend brings its methods with its registry entry.
"""

from __future__ import annotations

import functools
import importlib

from google.protobuf import descriptor_pool, message_factory
from google.protobuf.descriptor import MethodDescriptor, ServiceDescriptor
from google.protobuf.message import Message

from services.common.registry import ALL_PROCESSES, ProcessSpec


@functools.cache
def load() -> None:
    """Imports every process's generated module, which registers its descriptors."""
    for process in ALL_PROCESSES:
        if process.proto:
            importlib.import_module(process.proto)


def service(name: str) -> ServiceDescriptor:
    """The descriptor of a fully qualified service, e.g. ``genmedia.v1.ProvenanceService``."""
    load()
    return descriptor_pool.Default().FindServiceByName(name)


def path(method: MethodDescriptor) -> str:
    """The method's gRPC path, ``/package.Service/Method``."""
    return f"/{method.containing_service.full_name}/{method.name}"


def method_of(process: ProcessSpec, name: str) -> MethodDescriptor:
    """The method ``name`` of the services ``process`` serves; KeyError if none has it."""
    for service_name in process.grpc_services:
        found = service(service_name).methods_by_name.get(name)
        if found is not None:
            return found
    raise KeyError(f"{process.name} serves no method {name!r}")


def message_class(method: MethodDescriptor, response: bool = False) -> type[Message]:
    """The generated class of the method's request (or response) message."""
    return message_factory.GetMessageClass(method.output_type if response else method.input_type)
