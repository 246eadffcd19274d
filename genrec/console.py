"""What the console shows: progress bars only on a terminal, so a log file holds lines, not carriage returns."""
from __future__ import annotations

import os
import sys


def interactive() -> bool:
    """True when progress bars should be drawn: stderr is a terminal, unless ``GENREC_PROGRESS=0`` / ``=1``."""
    forced = os.environ.get("GENREC_PROGRESS")
    if forced is not None:
        return forced not in ("0", "false", "no")
    return sys.stderr.isatty()


__all__ = ["interactive"]
