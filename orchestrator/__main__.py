"""``python -m orchestrator ...`` is ``tinyfleet ...`` (the ``ray job submit`` entrypoint)."""

import sys

from tinyfleet.cli import main

sys.exit(main())
