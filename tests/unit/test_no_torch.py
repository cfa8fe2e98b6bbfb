import subprocess
import sys

from services.common.registry import ALL_PROCESSES

SERVICE_MODULES = [
    *(f"{process.package}.__main__" for process in ALL_PROCESSES),
    "services.client.cli",
    "services.launcher.stack",
]


def test_no_service_module_imports_torch_or_transformers() -> None:
    code = (
        "import importlib, sys\n"
        f"for name in {SERVICE_MODULES!r}:\n"
        "    importlib.import_module(name)\n"
        "heavy = sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'transformers'))\n"
        "print(heavy)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120
    )
    assert result.stdout.strip() == "[]", result.stdout
