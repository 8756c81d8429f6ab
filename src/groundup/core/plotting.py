"""What every plot and table of groundup shares: matplotlib writing files (the Agg backend), and one way to print a
number."""

from __future__ import annotations

import os
from typing import Any


def pyplot():
    """`matplotlib.pyplot`, on the Agg backend (files, not windows) unless `MPLBACKEND` says otherwise (a notebook
    sets its own)."""
    import matplotlib

    if os.environ.get("MPLBACKEND") is None:
        matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def fmt(value: Any, digits: int = 3) -> str:
    """A table cell: "–" for a missing value, floats to `digits` decimals, anything else as text."""
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)
