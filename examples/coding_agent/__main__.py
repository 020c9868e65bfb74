"""``python -m examples.coding_agent SPEC --out DIR [--json] [--planner spec|openai] [--executor ray|local]``."""

import os
import sys

from .cli import main

os.environ.setdefault("RAY_DEDUP_LOGS", "0")
sys.exit(main())
