"""Where text comes from: a world folder, local files, or a Hub dataset, all through `datasets`.

One function resolves a user's `dataset` string so the tokenizer and pretraining stages accept the same sources:
- a folder with `corpus.jsonl` (what `groundup world` writes),
- local files or globs: `.txt` (one document per line), `.jsonl`/`.json`, `.parquet`, `.csv`,
- anything else is a Hub dataset id, e.g. `HuggingFaceFW/fineweb-edu` (with `streaming: true` for large ones),
  or a local folder laid out like a Hub dataset repository.
"""

from __future__ import annotations

import glob
import itertools
from pathlib import Path
from typing import Iterator

from groundup.core.errors import GroundupError
from groundup.core.files import check_files, explain_load_error

WORLD_CORPUS = "corpus.jsonl"
_BUILDERS = {".txt": "text", ".jsonl": "json", ".json": "json", ".parquet": "parquet", ".csv": "csv"}


def is_world_dir(source: str | Path) -> bool:
    return (Path(source) / WORLD_CORPUS).is_file()


def _local_files(source: str) -> list[str]:
    if Path(source).is_file():
        return [source]
    return sorted(glob.glob(source)) if any(c in source for c in "*?[") else []


def load_local_files(label: str, files: list[str], builders: dict[str, str], streaming: bool = False):
    """Local files of one format (`builders`: suffix -> `datasets` builder) as one split, with one-line errors for
    mixed or unknown formats and for empty or non-UTF-8 files."""
    import datasets

    suffixes = {Path(f).suffix for f in files}
    kinds = {builders.get(s) for s in suffixes}
    if None in kinds or len(kinds) != 1:
        raise GroundupError(f"dataset {label}: files must all be one of {sorted(builders)}, got {sorted(suffixes)}")
    check_files(label, files)
    try:
        return datasets.load_dataset(kinds.pop(), data_files=files, split="train", streaming=streaming)
    except Exception as err:  # noqa: BLE001 - an empty or non-UTF-8 file: say which, in one line
        raise explain_load_error(label, files, err) from None


def load_text_dataset(source: str, text_column: str = "text", config_name: str | None = None,
                      split: str = "train", streaming: bool = False):
    """A `datasets.Dataset` (or `IterableDataset` when streaming) with `text_column` checked to exist."""
    import datasets

    if is_world_dir(source):
        corpus = str(Path(source) / WORLD_CORPUS)
        try:
            ds = datasets.load_dataset("json", data_files=corpus, split="train")
        except Exception as err:  # noqa: BLE001 - an empty or damaged file: say which and how, in one line
            raise explain_load_error(source, [corpus], err) from None
    elif files := _local_files(source):
        ds = load_local_files(source, files, _BUILDERS, streaming)
    elif not Path(source).is_dir() and (source.startswith((".", "/")) or source.endswith(tuple(_BUILDERS))):
        raise GroundupError(f"dataset {source}: no such file or folder")
    else:
        # A Hub dataset id, or a local folder laid out like a Hub dataset repo (data/train-*.parquet, ...):
        # `load_dataset` treats both alike, which is how the Hub path is tested offline.
        try:
            ds = datasets.load_dataset(source, config_name, split=split, streaming=streaming)
        except Exception as err:  # noqa: BLE001 - datasets raises many kinds; the user needs one line
            raise GroundupError(f"dataset {source}: could not load it ({type(err).__name__}: "
                                f"{str(err).splitlines()[0] if str(err) else ''})") from None
    columns = ds.column_names
    if columns is None:  # a streaming dataset whose features are unknown until read
        first = next(iter(ds), None)
        columns = list(first) if first is not None else [text_column]
    if text_column not in columns:
        raise GroundupError(f"dataset {source}: no text column {text_column!r} (columns: {', '.join(columns)}); "
                            f"set text_column")
    return ds


def iter_texts(ds, text_column: str = "text", max_documents: int | None = None) -> Iterator[str]:
    """The non-empty texts of a dataset, at most `max_documents` of them."""
    # Batched reads: row by row is an order of magnitude slower on Arrow-backed datasets.
    texts = (t for batch in ds.select_columns([text_column]).iter(batch_size=1024) for t in batch[text_column])
    texts = (t for t in texts if isinstance(t, str) and t.strip())
    return itertools.islice(texts, max_documents) if max_documents else texts
