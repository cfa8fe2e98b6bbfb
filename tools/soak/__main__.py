"""python -m tools.soak: the local stack under steady traffic for a bounded time, judged.

Exit status 0: no call failed and every process stayed flat; 3: otherwise;
2: bad settings.
"""

from __future__ import annotations

import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

from services.launcher.stack import Stack, StackPorts
from tools.soak.report import summary, write
from tools.soak.run import soak
from tools.soak.settings import soak_settings

FAILED = 3


def main(argv: Sequence[str] | None = None) -> int:
    settings = soak_settings(argv)
    with tempfile.TemporaryDirectory(prefix="genmedia-soak-") as scratch:
        stack = Stack(
            weights_dir=settings.weights_dir.resolve(),
            work_dir=Path(scratch),
            ports=StackPorts.free(),
            extra_env={"GENMEDIA_LOG_LEVEL": "warning"},
        )
        try:
            stack.start(timeout_s=600, progress=print)
            result = soak(stack, settings)
        finally:
            stack.stop()
    print(summary(result, settings))
    for path in write(result, settings):
        print(f"wrote {path}")
    return 0 if result.passed else FAILED


if __name__ == "__main__":
    sys.exit(main())
