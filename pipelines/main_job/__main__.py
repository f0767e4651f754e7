"""``python -m pipelines.main_job``: the main job behind ``make run``."""

from __future__ import annotations

import sys

from pipelines.main_job.job import main

sys.exit(main())
