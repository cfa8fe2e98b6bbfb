"""Fixtures for the model code: tiny real-format checkpoints, a stand-in for Triton's pb_utils."""

from __future__ import annotations

import importlib.util
import json
import sys
import threading
import types
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pytest

REPOSITORY = Path(__file__).resolve().parents[3] / "models" / "repository"


@pytest.fixture(scope="session")
def weights_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A weights root written once per session by tools.test_weights."""
    from tools.test_weights import write_all

    root = tmp_path_factory.mktemp("weights")
    write_all(root)
    return root


class FakeTensor:
    def __init__(self, name: str, array: np.ndarray) -> None:
        self._name = name
        self._array = np.asarray(array)

    def name(self) -> str:
        return self._name

    def as_numpy(self) -> np.ndarray:
        return self._array

    @classmethod
    def from_dlpack(cls, name: str, exporter: Any) -> FakeTensor:
        # As the stub does: through the DLPack protocol, not the object's own type.
        return cls(name, np.from_dlpack(exporter))


class FakeTritonError:
    INVALID_ARG = 3
    INTERNAL = 13
    UNAVAILABLE = 14
    CANCELLED = 1

    def __init__(self, message: str, code: int = INTERNAL) -> None:
        self._message = message
        self._code = code

    def message(self) -> str:
        return self._message

    def code(self) -> int:
        return self._code


class FakeResponse:
    def __init__(self, output_tensors: list[FakeTensor] | None = None, error: Any = None) -> None:
        self.output_tensors = output_tensors or []
        self.error = error

    def output(self, name: str) -> np.ndarray:
        return next(t.as_numpy() for t in self.output_tensors if t.name() == name)


class FakeSender:
    """Records what a decoupled model sends: (response, flags) pairs."""

    def __init__(self) -> None:
        self.sent: list[tuple[FakeResponse | None, int]] = []
        self.closed = threading.Event()

    def send(self, response: FakeResponse | None = None, flags: int = 0) -> None:
        assert not self.closed.is_set(), "sent after the final flag"
        self.sent.append((response, flags))
        if flags & 1:
            self.closed.set()

    def tokens(self) -> list[int]:
        """Every token sent, in order (a response carries one or more)."""
        return [
            int(token)
            for r, _ in self.sent
            if r is not None and not r.error
            for token in r.output("token_id").reshape(-1)
        ]

    def errors(self) -> list[str]:
        return [r.error.message() for r, _ in self.sent if r is not None and r.error]


class FakeRequest:
    def __init__(self, **inputs: np.ndarray) -> None:
        self.inputs = {name: FakeTensor(name, array) for name, array in inputs.items()}
        self.sender = FakeSender()
        self.cancel_after_tokens: int | None = None
        self.cancel_checks = 0

    def get_response_sender(self) -> FakeSender:
        return self.sender

    def is_cancelled(self) -> bool:
        self.cancel_checks += 1
        limit = self.cancel_after_tokens
        return limit is not None and len(self.sender.tokens()) >= limit


class FakeMetric:
    def __init__(self) -> None:
        self.total = 0.0

    def increment(self, value: float) -> None:
        self.total += value

    def set(self, value: float) -> None:
        self.total = value

    def value(self) -> float:
        return self.total


class FakeMetricFamily:
    COUNTER = 0
    GAUGE = 1
    created: ClassVar[dict[str, FakeMetricFamily]] = {}

    def __init__(self, name: str, description: str, kind: int) -> None:
        self.name = name
        self.kind = kind
        self.metrics: dict[tuple[tuple[str, str], ...], FakeMetric] = {}
        FakeMetricFamily.created[name] = self

    def Metric(self, labels: dict[str, str] | None = None) -> FakeMetric:  # Triton's spelling
        return self.metrics.setdefault(tuple(sorted((labels or {}).items())), FakeMetric())


class FakeLogger:
    @staticmethod
    def log_info(message: str) -> None:
        pass

    log_warn = log_error = log_verbose = log_info


def _fake_pb_utils() -> types.ModuleType:
    module = types.ModuleType("triton_python_backend_utils")
    module.Tensor = FakeTensor
    module.TritonError = FakeTritonError
    module.InferenceResponse = FakeResponse
    module.InferenceRequest = FakeRequest
    module.MetricFamily = FakeMetricFamily
    module.Logger = FakeLogger
    module.TritonModelException = RuntimeError
    module.TRITONSERVER_RESPONSE_COMPLETE_FINAL = 1
    module.get_input_tensor_by_name = lambda request, name: request.inputs.get(name)
    module.using_decoupled_model_transaction_policy = lambda config: bool(
        config.get("model_transaction_policy", {}).get("decoupled")
    )
    return module


@pytest.fixture
def pb_utils(monkeypatch: pytest.MonkeyPatch) -> Iterator[types.ModuleType]:
    """Install the stand-in as triton_python_backend_utils; forget modules that imported it."""
    module = _fake_pb_utils()
    FakeMetricFamily.created = {}
    monkeypatch.setitem(sys.modules, "triton_python_backend_utils", module)
    for name in ("genmedia_models.triton_utils",):
        monkeypatch.delitem(sys.modules, name, raising=False)
    yield module


def _source(name: str) -> str:
    """The repository folder a served model comes from (every cyclegan_<direction>: cyclegan)."""
    return "cyclegan" if name.startswith("cyclegan_") else name


def _load_triton_model(name: str) -> types.ModuleType:
    """Import models/repository/<name>/1/model.py the way the python backend does (by path)."""
    path = REPOSITORY / _source(name) / "1" / "model.py"
    spec = importlib.util.spec_from_file_location(f"triton_model_{name}", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _initialize_args(name: str, config: dict[str, Any]) -> dict[str, str]:
    """The args dict Triton hands to initialize() for a CPU instance."""
    return {
        "model_config": json.dumps({"name": name, **config}),
        "model_instance_kind": "CPU",
        "model_instance_device_id": "0",
        "model_repository": str(REPOSITORY / _source(name)),
        "model_version": "1",
        "model_name": name,
    }


@pytest.fixture
def triton_model(
    pb_utils: types.ModuleType, weights_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Callable[[str, dict[str, Any]], Any]]:
    """Build and initialize a repository model's TritonPythonModel against the test weights.

    The config passed in stands for config.pbtxt's parsed JSON (parameters included).
    """
    monkeypatch.setenv("GENMEDIA_WEIGHTS_DIR", str(weights_dir))
    monkeypatch.delenv("GENMEDIA_TORCH_THREADS", raising=False)
    started: list[Any] = []

    def build(name: str, config: dict[str, Any]) -> Any:
        model = _load_triton_model(name).TritonPythonModel()
        model.initialize(_initialize_args(name, config))
        started.append(model)
        return model

    yield build
    for model in started:
        model.finalize()
