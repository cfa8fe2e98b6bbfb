"""python -m services.client (same as the ``genmedia`` command)."""

import sys

from services.client.cli import main

sys.exit(main())
