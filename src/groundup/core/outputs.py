"""Output folders that are either complete or absent.

A stage writes into a hidden sibling folder and renames it into place at the end, so a crash or Ctrl-C never
leaves a folder that looks finished; the speedrun can then treat "the folder exists" as "the stage is done".
"""

from __future__ import annotations

import contextlib
import errno
import glob
import os
import shutil
from pathlib import Path
from typing import Any, Iterator

from groundup.core.errors import GroundupError


def check_output_dir(path: str | Path, overwrite: bool, inputs: dict[str, Any] | None = None) -> Path:
    """Refuse, before any work, an output folder that would destroy or lie: a non-empty one without `--overwrite`,
    one that is, contains or lies inside an input (`inputs`: key -> local path or Hub id; `--overwrite` would delete
    the input, or the output would change it), or one that cannot be written (read-only, disk full). Also removes
    the staging folders that killed runs left beside it."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise GroundupError(f"output path {path} exists and is not a folder")
    check_not_an_input(path, inputs or {})
    if path.is_dir() and any(path.iterdir()) and not overwrite:
        raise GroundupError(f"output folder {path} is not empty; pass --overwrite true to replace it")
    remove_stale_staging(path)
    check_writable(path)
    return path


def check_not_an_input(output: str | Path, inputs: dict[str, Any]) -> None:
    """One line when the output folder is an input, holds one, or lies inside one (Hub ids and unset keys pass)."""
    out = Path(output).resolve()
    for key, value in inputs.items():
        for item in value if isinstance(value, (list, tuple)) else [value]:
            if not item or not Path(str(item)).exists():
                continue
            source = Path(str(item)).resolve()
            if out == source:
                how = "is"
            elif out in source.parents:
                how = "contains"
            elif source in out.parents:
                how = "is inside"
            else:
                continue
            raise GroundupError(f"output_dir {output} {how} the input {key} {item}: writing there would change or "
                                "delete it; choose another output_dir")


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        return True
    return True


def remove_stale_staging(path: str | Path) -> list[Path]:
    """Delete `.NAME.tmp-PID` / `.NAME.old-PID` siblings of `path` whose process is gone (a run killed while writing
    it); returns what was removed. A live process's staging folder is left alone."""
    path = Path(path)
    removed = []
    if not path.parent.is_dir():
        return removed
    for kind in ("tmp", "old"):
        for stale in path.parent.glob(f".{glob.escape(path.name)}.{kind}-*"):
            pid = stale.name.rsplit("-", 1)[-1]
            if pid.isdigit() and not _alive(int(pid)):
                shutil.rmtree(stale, ignore_errors=True) if stale.is_dir() else stale.unlink(missing_ok=True)
                removed.append(stale)
    return removed


def check_writable(path: str | Path) -> None:
    """Write and delete a small file where the output's staging folder will go (the nearest existing folder), so a
    read-only folder or a full disk stops the stage before its work, not after."""
    path = Path(path)
    where = path.parent if path.parent != Path("") else Path(".")
    while not where.exists() and where.parent != where:
        where = where.parent
    probe = where / f".groundup-write-test-{os.getpid()}"
    try:
        with open(probe, "wb") as f:
            f.write(b"\0" * 4096)
            f.flush()
            os.fsync(f.fileno())
    except OSError as err:
        raise GroundupError(f"output_dir {path}: {describe_os_error(err, where)}") from None
    finally:
        with contextlib.suppress(OSError):
            probe.unlink()


FULL_BELOW = 2**20  # bytes free under which a failed write is blamed on a full disk


def disk_full_error(where: str | Path, err: BaseException) -> GroundupError | None:
    """The one-line error for a write that failed because the disk holding `where` is full, or None. torch's writer
    reports a full disk as "basic_ios::clear: iostream error" / "unexpected pos", so besides ENOSPC this looks at the
    space left; call it before deleting what the failed write left."""
    if isinstance(err, OSError) and err.errno in (errno.ENOSPC, errno.EDQUOT):
        return GroundupError(describe_os_error(err, where))
    target = Path(where)
    while not target.exists() and target.parent != target:
        target = target.parent
    try:
        free = shutil.disk_usage(target).free
    except OSError:
        return None
    if free < FULL_BELOW:
        return GroundupError(f"disk full: {free:,} bytes left on the device holding {where} while writing it "
                             f"({type(err).__name__}); free some space and run again")
    return None


def describe_os_error(err: OSError, where: str | Path | None = None) -> str:
    """What a write error means, in words: disk full, read-only folder, no permission; else the system's message."""
    where = where if where is not None else (err.filename or "?")
    if err.errno in (errno.ENOSPC, errno.EDQUOT):
        return f"disk full: no space left on the device holding {where} ({err.strerror}); free some space and run again"
    if err.errno == errno.EROFS:
        return f"{where} is on a read-only file system; choose a writable output folder"
    if err.errno in (errno.EACCES, errno.EPERM):
        return f"{where} is read-only for this user ({err.strerror}); choose a writable output folder"
    return f"cannot write in {where} ({err.strerror or err})"


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
    except BaseException as err:
        full = disk_full_error(staging, err) if isinstance(err, Exception) else None
        shutil.rmtree(staging, ignore_errors=True)
        if full is not None:
            raise full from None
        raise
    if path.exists():
        old = path.parent / f".{path.name}.old-{os.getpid()}"
        path.rename(old)
        staging.rename(path)
        shutil.rmtree(old, ignore_errors=True)
    else:
        staging.rename(path)
