"""The OpenAPI 3 document of the HTTP door, generated from the protos' descriptors and
their ``google.api.http`` annotations (``make protos`` writes it beside the generated
code; the gateway serves it at ``/openapi.json``).

python -m services.gateway.http.openapi --out genmedia/v1/openapi.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from google.protobuf.descriptor import Descriptor, FieldDescriptor

from services.common.registry import PROVENANCE_SERVICE
from services.gateway.http.routes import json_routes

VERSION = "1.0.0"
_INTEGER_32 = {
    FieldDescriptor.TYPE_INT32: "int32",
    FieldDescriptor.TYPE_SINT32: "int32",
    FieldDescriptor.TYPE_SFIXED32: "int32",
    FieldDescriptor.TYPE_UINT32: "int64",
    FieldDescriptor.TYPE_FIXED32: "int64",
}
_INTEGER_64 = {
    FieldDescriptor.TYPE_INT64,
    FieldDescriptor.TYPE_SINT64,
    FieldDescriptor.TYPE_SFIXED64,
    FieldDescriptor.TYPE_UINT64,
    FieldDescriptor.TYPE_FIXED64,
}
_WELL_KNOWN = {"google.protobuf.Timestamp": {"type": "string", "format": "date-time"}}
_ERROR = {
    "type": "object",
    "description": "grpc-gateway's error body: the gRPC status code, its message.",
    "properties": {
        "code": {"type": "integer"},
        "message": {"type": "string"},
        "details": {"type": "array", "items": {"type": "object"}},
    },
    "required": ["code", "message"],
}
_OPENAI_ROUTES = {
    "/v1/models": ("get", "List the served models (ids to pass as `model`)."),
    "/v1/completions": ("post", "OpenAI text completion with GPT-2 (SSE with stream: true)."),
    "/v1/chat/completions": (
        "post",
        "OpenAI chat completion over a plain User:/Assistant: template.",
    ),
    "/v1/images/generations": ("post", "OpenAI image generation: `prompt` names the BigGAN class."),
    "/v1/images/edits": ("post", "OpenAI image edit: CycleGAN translation of the uploaded image."),
}


def field_schema(field: FieldDescriptor, schemas: dict[str, Any]) -> dict[str, Any]:
    """A field's schema in the proto3 JSON mapping (64-bit integers and bytes as strings)."""
    if field.type == FieldDescriptor.TYPE_MESSAGE:
        schema = _message_ref(field.message_type, schemas)
    elif field.type == FieldDescriptor.TYPE_ENUM:
        schema = {"type": "string", "enum": [value.name for value in field.enum_type.values]}
    elif field.type == FieldDescriptor.TYPE_BOOL:
        schema = {"type": "boolean"}
    elif field.type == FieldDescriptor.TYPE_STRING:
        schema = {"type": "string"}
    elif field.type == FieldDescriptor.TYPE_BYTES:
        schema = {"type": "string", "format": "byte"}
    elif field.type in (FieldDescriptor.TYPE_FLOAT, FieldDescriptor.TYPE_DOUBLE):
        schema = {"type": "number"}
    elif field.type in _INTEGER_64:
        schema = {"type": "string", "format": "int64"}
    else:
        schema = {"type": "integer", "format": _INTEGER_32[field.type]}
    if field.is_repeated:
        return {"type": "array", "items": schema}
    return schema


def _message_ref(message: Descriptor, schemas: dict[str, Any]) -> dict[str, Any]:
    if message.full_name in _WELL_KNOWN:
        return dict(_WELL_KNOWN[message.full_name])
    if message.full_name not in schemas:
        schemas[message.full_name] = {}  # placeholder: messages may refer to each other
        schemas[message.full_name] = {
            "type": "object",
            "properties": {
                field.json_name: field_schema(field, schemas) for field in message.fields
            },
        }
    return {"$ref": f"#/components/schemas/{message.full_name}"}


def document() -> dict[str, Any]:
    schemas: dict[str, Any] = {"genmedia.Error": _ERROR}
    paths: dict[str, Any] = {}
    for route in json_routes():
        method = route.method
        service = method.containing_service
        output = _message_ref(method.output_type, schemas)
        media = "application/x-ndjson" if method.server_streaming else "application/json"
        if method.server_streaming:
            output = {
                "type": "object",
                "properties": {
                    "result": output,
                    "error": {"$ref": "#/components/schemas/genmedia.Error"},
                },
            }
        operation: dict[str, Any] = {
            "operationId": f"{service.name}_{method.name}",
            "tags": [service.name],
            "summary": f"{service.full_name}/{method.name} over JSON",
            "responses": {
                "200": {
                    "description": "The RPC's response.",
                    "content": {media: {"schema": output}},
                },
                "default": {
                    "description": "An error, with the HTTP status that fits its gRPC code.",
                    "content": {
                        "application/json": {
                            "schema": {"$ref": "#/components/schemas/genmedia.Error"}
                        }
                    },
                },
            },
        }
        if service.full_name == PROVENANCE_SERVICE:
            operation["security"] = [{}, {"bearer": []}]  # open to anyone; a key adds figures
        if route.body:
            operation["requestBody"] = {
                "required": True,
                "content": {
                    "application/json": {"schema": _message_ref(method.input_type, schemas)}
                },
            }
        else:
            operation["parameters"] = [
                {
                    "name": field.json_name,
                    "in": "query",
                    "required": False,
                    "schema": field_schema(field, schemas),
                }
                for field in method.input_type.fields
            ]
        paths.setdefault(route.path, {})[route.verb.lower()] = operation
    for path, (verb, summary) in _OPENAI_ROUTES.items():
        paths[path] = {
            verb: {
                "operationId": "openai_" + path.strip("/").replace("/", "_"),
                "tags": ["OpenAI-compatible"],
                "summary": summary
                + " Request and response shapes follow the OpenAI API reference.",
                "responses": {"200": {"description": "As in the OpenAI API reference."}},
            }
        }
    return {
        "openapi": "3.0.3",
        "info": {
            "title": "genmedia HTTP API",
            "version": VERSION,
            "description": "Every genmedia RPC as JSON (gRPC-JSON transcoding of protos/), and "
            "the OpenAI-compatible routes. Everything generated is labelled synthetic.",
        },
        "servers": [{"url": "http://127.0.0.1:8080"}],
        "security": [{"bearer": []}],
        "paths": paths,
        "components": {
            "schemas": schemas,
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer", "description": "An API key."}
            },
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    args.out.write_text(json.dumps(document(), indent=1, sort_keys=True) + "\n")


if __name__ == "__main__":
    main()
