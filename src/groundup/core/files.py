"""What is wrong with a local data file, in one line: empty, not UTF-8 (which line and column), not JSON lines.

`datasets.load_dataset` reports these as a chain of two tracebacks ending in "An error occurred while generating the
dataset"; the loaders call `explain_load_error` when it fails on local files and raise its line instead.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Iterable

from groundup.core.errors import GroundupError
from groundup.core.jsonl import decode_line

TEXT_SUFFIXES = {".txt", ".jsonl", ".json", ".csv"}


def file_problem(path: str | Path) -> str | None:
    """One line saying what makes a local data file unreadable, or None when it looks fine."""
    path = Path(path)
    if not path.is_file():
        return f"{path}: no such file"
    if path.stat().st_size == 0:
        return f"{path} is empty (0 bytes)"
    if path.suffix not in TEXT_SUFFIXES:
        return None
    with open(path, "rb") as f:
        for lineno, raw in enumerate(f, 1):
            try:
                line = decode_line(raw, path, lineno)
            except GroundupError as err:
                return str(err)
            if path.suffix == ".jsonl" and line.strip():
                try:
                    json.loads(line)
                except json.JSONDecodeError as err:
                    return f"{path}:{lineno}: not valid JSON ({err.msg}, column {err.colno})"
    return None


def check_files(source: str, files: Iterable[str | Path], max_bytes: int = 2**31) -> None:
    """Stop with one line when a local data file is empty, not UTF-8 or (.jsonl) not JSON lines, before `datasets`
    reads it: its JSON reader accepts bytes that are not UTF-8 and fails only when the row is read, deep in training.
    Files beyond `max_bytes` in all are left to `explain_load_error` (scanning them would cost seconds per GB)."""
    files = [Path(f) for f in files]
    if sum(f.stat().st_size for f in files if f.is_file()) > max_bytes:
        return
    for f in files:
        problem = file_problem(f)
        if problem:
            raise GroundupError(f"dataset {source}: {problem}")


def explain_load_error(source: str, files: Iterable[str | Path], err: BaseException) -> GroundupError:
    """The error to raise when `datasets` could not load local `files`: the first file's problem, or the cause's
    first line."""
    for f in files:
        problem = file_problem(f)
        if problem:
            return GroundupError(f"dataset {source}: {problem}")
    cause = err
    while cause.__cause__ is not None:  # DatasetGenerationError wraps the real error
        cause = cause.__cause__
    if isinstance(cause, OSError) and cause.errno is not None:
        from groundup.core.outputs import describe_os_error

        return GroundupError(f"dataset {source}: {describe_os_error(cause)}")
    first = str(cause).splitlines()[0] if str(cause) else ""
    return GroundupError(f"dataset {source}: could not load it ({type(cause).__name__}: {first})")
