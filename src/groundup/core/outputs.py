"""Output folders that are either complete or absent.

A stage writes into a hidden sibling folder and renames it into place at the end, so a crash or Ctrl-C never
leaves a folder that looks finished; the speedrun can then treat "the folder exists" as "the stage is done".
"""

from __future__ import annotations

import contextlib
import os
import shutil
from pathlib import Path
from typing import Iterator

from groundup.core.errors import GroundupError


def check_output_dir(path: str | Path, overwrite: bool) -> Path:
    """Refuse to touch a non-empty folder unless the user said `--overwrite`. Call before any work."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise GroundupError(f"output path {path} exists and is not a folder")
    if path.is_dir() and any(path.iterdir()) and not overwrite:
        raise GroundupError(f"output folder {path} is not empty; pass --overwrite true to replace it")
    return path


@contextlib.contextmanager
def atomic_output_dir(path: str | Path, overwrite: bool) -> Iterator[Path]:
    """Yield a staging folder; on success it replaces `path` in one rename, on failure it is deleted."""
    path = check_output_dir(path, overwrite)
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = path.parent / f".{path.name}.tmp-{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir()
    try:
        yield staging
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    if path.exists():
        old = path.parent / f".{path.name}.old-{os.getpid()}"
        path.rename(old)
        staging.rename(path)
        shutil.rmtree(old, ignore_errors=True)
    else:
        staging.rename(path)
