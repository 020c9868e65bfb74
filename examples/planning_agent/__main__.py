"""``python -m examples.planning_agent --out DIR [--scenario FILE] [--seed K] [--planner rules|openai] [--json]``."""

import os
import sys

from .cli import main

os.environ.setdefault("RAY_DEDUP_LOGS", "0")
sys.exit(main())
