"""JSON lines, the format of every groundup data file (world, questions, predictions, probe data, logs)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterable


def read_jsonl(path: str | Path) -> list[dict[str, Any]]:
    """The rows of a JSON lines file; a line that is not UTF-8 or not JSON stops with one line naming file and line."""
    return [row for _, row in iter_jsonl(path)]


def iter_jsonl(path: str | Path):
    """(line number, parsed value) of every non-blank line; `GroundupError` naming `path:line` on bad bytes or JSON."""
    from groundup.core.errors import GroundupError

    path = Path(path)
    if not path.is_file():
        raise GroundupError(f"file not found: {path}")
    with open(path, "rb") as f:
        for lineno, raw in enumerate(f, 1):
            line = decode_line(raw, path, lineno)
            if not line.strip():
                continue
            try:
                yield lineno, json.loads(line)
            except json.JSONDecodeError as err:
                raise GroundupError(f"{path}:{lineno}: not valid JSON ({err.msg}, column {err.colno})") from None


def decode_line(raw: bytes, path: str | Path, lineno: int) -> str:
    """One line of a text file as UTF-8; `GroundupError` naming file, line and column when it is not."""
    from groundup.core.errors import GroundupError

    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as err:
        column = len(raw[:err.start].decode("utf-8", errors="replace")) + 1
        raise GroundupError(f"{path}:{lineno}: not UTF-8 text (byte 0x{raw[err.start]:02x} at column {column}); "
                            "save the file as UTF-8") from None


def write_jsonl(path: str | Path, rows: Iterable[dict[str, Any]]) -> None:
    with open(path, "w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
