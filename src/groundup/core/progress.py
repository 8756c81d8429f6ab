"""Progress output that suits where it goes: a bar on a terminal, one plain line per logging step anywhere else.

Every training stage takes `progress: auto | bar | lines | none` (default `auto`):
- `auto`: a tqdm bar when stdout and stderr are both terminals, else `lines` (a redirected log, CI, `nohup`, a
  notebook's captured output); a bar's carriage-return frames would otherwise fill a log file.
- `bar`: a tqdm bar (falls back to `lines` when bars are turned off, below).
- `lines`: one line per logging step: step/total, loss, tokens/s or steps/s, elapsed time and ETA.
- `none`: no progress output (the stage's own summary lines still come).

`TQDM_DISABLE` (any non-empty value, as tqdm and TRL read it) turns every bar off, including the bars of datasets,
transformers and huggingface_hub; progress then comes as lines, unless `progress: none`.
"""

from __future__ import annotations

import os
import sys
import time
from typing import Any, TextIO

from groundup.core.errors import GroundupError

MODES = ("auto", "bar", "lines", "none")
# Environment switches read when the library is imported; set only while bars are off, and only by us.
_LIBRARY_ENV = ("HF_DATASETS_DISABLE_PROGRESS_BARS", "HF_HUB_DISABLE_PROGRESS_BARS")
_state: dict[str, Any] = {"off": False, "env": []}


def tqdm_disabled() -> bool:
    """True when the user set TQDM_DISABLE (not when groundup set it while library bars are off)."""
    return bool(os.environ.get("TQDM_DISABLE")) and "TQDM_DISABLE" not in _state["env"]


def _is_terminal(stream: Any) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):  # a closed or replaced stream
        return False


def resolve_mode(mode: str = "auto") -> str:
    """`auto` / `bar` / `lines` / `none` -> what to show now: `bar`, `lines` or `none`."""
    if mode not in MODES:
        raise GroundupError(f"progress must be one of {', '.join(MODES)}, got {mode!r}")
    if mode == "none":
        return "none"
    if mode == "auto":
        mode = "bar" if _is_terminal(sys.stdout) and _is_terminal(sys.stderr) else "lines"
    if mode == "bar" and tqdm_disabled():
        return "lines"
    return mode


def library_bars(enabled: bool) -> None:
    """Turn the progress bars of datasets (map, filter, casting), transformers (loading and writing weights) and
    huggingface_hub on or off. Libraries not imported yet are switched through their environment variables; TRL reads
    `TQDM_DISABLE` itself (DPO's reference log-prob pass), so that is set too while bars are off."""
    if not enabled and not _state["off"]:
        for name in (*_LIBRARY_ENV, "TQDM_DISABLE"):
            if not os.environ.get(name):
                os.environ[name] = "1"
                _state["env"].append(name)
        _switch_imported(False)
        _state["off"] = True
    elif enabled and _state["off"]:
        for name in _state["env"]:
            os.environ.pop(name, None)
        _state["env"] = []
        _switch_imported(True)
        _state["off"] = False


def _switch_imported(enabled: bool) -> None:
    import warnings

    with warnings.catch_warnings():  # datasets warns when its environment variable wins over the call
        warnings.simplefilter("ignore")
        if "datasets" in sys.modules:
            import datasets

            (datasets.enable_progress_bars if enabled else datasets.disable_progress_bars)()
        if "huggingface_hub" in sys.modules:
            from huggingface_hub import utils as hub_utils

            (hub_utils.enable_progress_bars if enabled else hub_utils.disable_progress_bars)()
        if "transformers" in sys.modules:
            from transformers.utils import logging as hf_logging

            (hf_logging.enable_progress_bar if enabled else hf_logging.disable_progress_bar)()


def format_duration(seconds: float | None) -> str:
    if seconds is None or seconds != seconds or seconds == float("inf"):
        return "?"
    seconds = int(round(seconds))
    return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


def format_value(value: Any) -> str:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return str(value)
    if isinstance(value, int):
        return f"{value:,}"
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    return f"{value:.4g}"


def progress_line(desc: str, step: int, total: int | None, figures: dict[str, Any], elapsed: float,
                  steps_done: int) -> str:
    """`pretrain step 10/30 (33%) | loss 5.716 | tok/s 1,854 | steps/s 2.04 | elapsed 0:00:05 | ETA 0:00:10`."""
    head = f"{desc} step {step}"
    if total:
        head += f"/{total} ({100 * step / total:.0f}%)"
    parts = [head] + [f"{key} {format_value(value)}" for key, value in figures.items() if value is not None]
    rate = steps_done / elapsed if elapsed > 0 and steps_done > 0 else None
    if rate is not None:
        parts.append(f"steps/s {rate:.3g}")
    parts.append(f"elapsed {format_duration(elapsed)}")
    if total and rate and step < total:
        parts.append(f"ETA {format_duration((total - step) / rate)}")
    return " | ".join(parts)


# Plain lines are for a log file a person reads: about this many lines per loop, evenly spaced (and the last step).
# Every logging step still goes to the trackers and the stage's train log.
LINES_PER_LOOP = 20


class LineThrottle:
    """Which logging steps of a `total`-step loop get a printed line: the first at or past each 1/LINES_PER_LOOP mark,
    and the last step. Without a total, every one."""

    def __init__(self, total: int | None, first: int = 0):
        self.every = max(1, total // LINES_PER_LOOP) if total else 1
        self.total, self.next = total, first + self.every

    def due(self, step: int) -> bool:
        if not self.total or step >= self.total or step >= self.next:
            self.next = (step // self.every + 1) * self.every
            return True
        return False


class Progress:
    """A loop's progress in the resolved mode: a tqdm bar, plain lines at each `log`, or nothing.

    `update(n)` after each step; `log(**figures)` at each logging step (a line, or the bar's postfix); `write(text)`
    for occasional messages (printed above the bar, or as a line; `progress=True` ones are dropped in `none`).
    """

    def __init__(self, desc: str, total: int, initial: int = 0, mode: str = "auto", enabled: bool = True,
                 unit: str = "step", stream: TextIO | None = None):
        self.desc, self.total, self.n = desc, total, initial
        self.mode = resolve_mode(mode) if enabled else "none"
        self.stream = stream
        self._start, self._first = time.monotonic(), initial
        self._throttle = LineThrottle(total, initial)
        self.bar = None
        if self.mode == "bar":
            from tqdm.auto import tqdm

            self.bar = tqdm(total=total, initial=initial, desc=desc, unit=unit, dynamic_ncols=True)

    def update(self, n: int = 1) -> None:
        self.n += n
        if self.bar is not None:
            self.bar.update(n)

    def line(self, figures: dict[str, Any]) -> str:
        return progress_line(self.desc, self.n, self.total, figures, time.monotonic() - self._start,
                             self.n - self._first)

    def log(self, **figures: Any) -> None:
        if self.bar is not None:
            self.bar.set_postfix({k: format_value(v) for k, v in figures.items() if v is not None}, refresh=True)
        elif self.mode == "lines" and self._throttle.due(self.n):
            self._print(self.line(figures))

    def write(self, text: str, progress: bool = False) -> None:
        if self.bar is not None:
            self.bar.write(text)
        elif self.mode == "lines" or not progress:
            self._print(text)

    def _print(self, text: str) -> None:
        print(text, file=self.stream or sys.stdout, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
