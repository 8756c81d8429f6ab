"""Pretraining data: text -> token ids, once, into flat memmaps; then fixed-length windows in a resumable order.

- Tokenized once with `datasets.map(batched=True, num_proc=N)`, on the (local) main process first; the other ranks
  wait on Accelerate's barrier and then read the result. Every document is followed by the end-of-text token
  (`<|endoftext|>`), GPT-2's document separator.
- Stored as two flat files, `train.bin` and `val.bin` (uint16 when the vocabulary fits, else uint32), read back with
  `np.memmap` (nanoGPT's format: no padding, no per-row overhead, the OS pages it in). `meta.json` says what they
  hold; its `fingerprint` (tokenizer + source + settings) lets a re-run reuse them.
- `val_documents` whole documents are held out (a seeded sample; the head of the stream when streaming).
- Batches are a pure function of (seed, step): an epoch is a seeded permutation of windows of `seq_length + 1`
  tokens at a seeded offset. Resuming at step s needs no data loader state and no skipping: it is the same order.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from groundup.core.chat import DOC_TOKEN
from groundup.core.errors import GroundupError
from groundup.data.text import WORLD_CORPUS, _local_files, is_world_dir, load_text_dataset

FORMAT_VERSION = 1
META = "meta.json"
HASH_LIMIT = 256 * 2**20  # local files up to this size are identified by content, larger ones by size + mtime
WRITE_BATCH = 4096


@dataclass
class DataSpec:
    """What to tokenize (the pretraining recipe's data keys)."""

    dataset: str
    text_column: str = "text"
    dataset_config: str | None = None
    dataset_split: str = "train"
    streaming: bool = False
    max_documents: int | None = None
    max_tokens: int | None = None
    val_documents: int = 200
    seed: int = 0
    mix_dataset: str | None = None  # a second source appended to the training tokens (e.g. a world folder)
    mix_repeats: int = 1
    mix_text_column: str = "text"


@dataclass
class TokenData:
    path: Path
    train: np.ndarray
    val: np.ndarray
    meta: dict[str, Any]


# --------------------------------------------------------------------------------------------------- fingerprint

def _file_identity(path: Path) -> str:
    stat = path.stat()
    if stat.st_size <= HASH_LIMIT:
        h = hashlib.sha256()
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(2**20), b""):
                h.update(chunk)
        return f"{path.name}:sha256:{h.hexdigest()}"
    return f"{path.resolve()}:{stat.st_size}:{stat.st_mtime_ns}"


def source_identity(spec: DataSpec) -> list[str]:
    if is_world_dir(spec.dataset):
        return ["world", _file_identity(Path(spec.dataset) / WORLD_CORPUS)]
    files = _local_files(spec.dataset)
    if files:
        return ["files"] + [_file_identity(Path(f)) for f in files]
    return ["hub", spec.dataset, str(spec.dataset_config), spec.dataset_split]  # a Hub revision can change: rm the dir


def fingerprint(spec: DataSpec, tokenizer) -> str:
    parts = {
        "format": FORMAT_VERSION,
        "tokenizer": hashlib.sha256(tokenizer.backend_tokenizer.to_str().encode()).hexdigest(),
        "source": source_identity(spec),
        "text_column": spec.text_column,
        "max_documents": spec.max_documents,
        "max_tokens": spec.max_tokens,
        "val_documents": spec.val_documents,
        "seed": spec.seed,
    }
    if spec.mix_dataset:
        parts["mix"] = [source_identity(DataSpec(dataset=spec.mix_dataset)), spec.mix_text_column, spec.mix_repeats]
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:16]


# --------------------------------------------------------------------------------------------------- tokenize

def token_dtype(vocab_size: int):
    return np.uint16 if vocab_size <= 2**16 else np.uint32


def _tokenize_fn(tokenizer, text_column: str, doc_id: int):
    def tokenize(batch):
        texts = [t if isinstance(t, str) and t.strip() else "" for t in batch[text_column]]
        ids = tokenizer(texts, add_special_tokens=False)["input_ids"]
        return {"ids": [x + [doc_id] if t else [] for x, t in zip(ids, texts)],
                "n_bytes": [len(t.encode("utf-8")) for t in texts]}
    return tokenize


def _write_map_style(ds, path: Path, dtype, max_tokens: int | None, mode: str = "wb") -> tuple[int, int, int]:
    """Write (mode "wb") or append ("ab") the flattened `ids` of a tokenized `Dataset` to `path`; returns (tokens,
    documents, bytes)."""
    import pyarrow.compute as pc

    n_tokens = n_docs = n_bytes = 0
    with open(path, mode) as f:
        for batch in ds.with_format("arrow").iter(batch_size=WRITE_BATCH):
            flat = pc.list_flatten(batch["ids"]).to_numpy(zero_copy_only=False)
            lengths = pc.list_value_length(batch["ids"]).to_numpy(zero_copy_only=False)
            sizes = batch["n_bytes"].to_numpy(zero_copy_only=False)
            if max_tokens is not None and n_tokens + len(flat) > max_tokens:
                flat = flat[: max_tokens - n_tokens]
            flat.astype(dtype).tofile(f)
            n_tokens += len(flat)
            n_docs += int((lengths > 0).sum())
            n_bytes += int(sizes.sum())
            if max_tokens is not None and n_tokens >= max_tokens:
                break
    return n_tokens, n_docs, n_bytes


def _build(spec: DataSpec, tokenizer, out: Path, num_proc: int | None) -> dict[str, Any]:
    doc_id = tokenizer.convert_tokens_to_ids(DOC_TOKEN)
    if doc_id is None or doc_id == tokenizer.unk_token_id:
        raise GroundupError(f"tokenizer has no {DOC_TOKEN} token to separate documents")
    dtype = token_dtype(len(tokenizer))
    ds = load_text_dataset(spec.dataset, spec.text_column, spec.dataset_config, spec.dataset_split, spec.streaming)
    tokenize = _tokenize_fn(tokenizer, spec.text_column, doc_id)
    start = time.perf_counter()
    if spec.streaming:
        stats = _build_streaming(ds, spec, tokenize, out, dtype)
    else:
        if spec.max_documents:
            ds = ds.select(range(min(spec.max_documents, len(ds))))
        n = len(ds)
        n_val = min(spec.val_documents, n // 2)  # never hold out more than half
        val_idx = np.sort(np.random.default_rng(spec.seed).choice(n, size=n_val, replace=False)) if n_val else []
        is_val = np.zeros(n, dtype=bool)
        is_val[val_idx] = True
        stats = {}
        for split, idx in (("train", np.flatnonzero(~is_val)), ("val", np.flatnonzero(is_val))):
            part = ds.select(idx)
            workers = num_proc if num_proc and num_proc > 1 and len(part) >= 1000 * num_proc else None
            tokenized = part.map(tokenize, batched=True, batch_size=1000, num_proc=workers,
                                 remove_columns=part.column_names, desc=f"tokenizing {split}")
            limit = spec.max_tokens if split == "train" else None
            stats[split] = _write_map_style(tokenized, out / f"{split}.bin", dtype, limit)
    mixed = _append_mix(spec, tokenizer, out / "train.bin", dtype, doc_id, num_proc) if spec.mix_dataset else None
    seconds = time.perf_counter() - start
    (train_tokens, train_docs, train_bytes), (val_tokens, val_docs, val_bytes) = stats["train"], stats["val"]
    meta = {
        "format": FORMAT_VERSION, "dtype": np.dtype(dtype).name, "vocab_size": len(tokenizer), "doc_token_id": doc_id,
        "dataset": spec.dataset, "train_tokens": train_tokens, "train_documents": train_docs,
        "train_bytes": train_bytes, "val_tokens": val_tokens, "val_documents": val_docs, "val_bytes": val_bytes,
    }
    if mixed is not None:
        meta.update(mix_dataset=spec.mix_dataset, mix_repeats=spec.mix_repeats, mix_tokens=mixed[0],
                    train_tokens=train_tokens + mixed[0], train_documents=train_docs + mixed[1],
                    train_bytes=train_bytes + mixed[2])
    meta.update(tokenize_seconds=round(seconds, 2),
                tokens_per_s=round((meta["train_tokens"] + val_tokens) / max(seconds, 1e-9)))
    return meta


def _append_mix(spec: DataSpec, tokenizer, train_bin: Path, dtype, doc_id: int,
                num_proc: int | None) -> tuple[int, int, int]:
    """Append `mix_repeats` copies of the mix source, each in its own document order, to the training tokens.

    Appending is mixing: training windows are drawn in a fresh random order every epoch (`WindowSampler`), wherever
    they lie in the file. This is how a web-scale run keeps the fictional world in its pretraining data (its facts
    need repetition, hence the repeats); the source is small and loaded whole, never streamed.
    """
    if spec.mix_repeats < 1:
        raise GroundupError(f"mix_repeats must be at least 1, got {spec.mix_repeats}")
    ds = load_text_dataset(spec.mix_dataset, spec.mix_text_column)
    workers = num_proc if num_proc and num_proc > 1 and len(ds) >= 1000 * num_proc else None
    tokenized = ds.map(_tokenize_fn(tokenizer, spec.mix_text_column, doc_id), batched=True, batch_size=1000,
                       num_proc=workers, remove_columns=ds.column_names, desc=f"tokenizing {spec.mix_dataset}")
    totals = [0, 0, 0]
    for repeat in range(spec.mix_repeats):
        counts = _write_map_style(tokenized.shuffle(seed=spec.seed + 1 + repeat), train_bin, dtype, None, mode="ab")
        totals = [a + b for a, b in zip(totals, counts)]
    return totals[0], totals[1], totals[2]


def _build_streaming(ds, spec: DataSpec, tokenize, out: Path, dtype) -> dict[str, tuple[int, int, int]]:
    """A Hub stream: the first `val_documents` documents are validation, the rest train, up to the caps."""
    from tqdm.auto import tqdm

    from groundup.core.progress import resolve_mode

    if spec.max_documents:
        ds = ds.take(spec.max_documents)
    tokenized = ds.map(tokenize, batched=True, batch_size=1000, remove_columns=[spec.text_column])
    counts = {"train": [0, 0, 0], "val": [0, 0, 0]}
    files = {split: open(out / f"{split}.bin", "wb") for split in counts}
    seen = 0
    bar = tqdm(total=spec.max_tokens, unit="tok", unit_scale=True, desc="tokenizing (stream)",
               disable=resolve_mode() != "bar")
    try:
        buffers: dict[str, list] = {"train": [], "val": []}
        for row in tokenized:
            if not row["ids"]:
                continue
            split = "val" if seen < spec.val_documents else "train"
            seen += 1
            ids = row["ids"]
            if split == "train" and spec.max_tokens is not None:
                ids = ids[: spec.max_tokens - counts["train"][0]]
            buffers[split].append(np.asarray(ids, dtype=dtype))
            counts[split][0] += len(ids)
            counts[split][1] += 1
            counts[split][2] += row["n_bytes"]
            if split == "train":
                bar.update(len(ids))
            if len(buffers[split]) >= WRITE_BATCH:
                np.concatenate(buffers[split]).tofile(files[split])
                buffers[split] = []
            if spec.max_tokens is not None and counts["train"][0] >= spec.max_tokens:
                break
        for split, buffer in buffers.items():
            if buffer:
                np.concatenate(buffer).tofile(files[split])
    finally:
        bar.close()
        for f in files.values():
            f.close()
    return {split: tuple(c) for split, c in counts.items()}


def _read(path: Path, dtype: str) -> np.ndarray:
    if path.stat().st_size == 0:
        return np.zeros(0, dtype=dtype)
    return np.memmap(path, dtype=dtype, mode="r")


def load_tokens(tokens_dir: str | Path) -> TokenData:
    path = Path(tokens_dir)
    meta = json.loads((path / META).read_text())
    return TokenData(path, _read(path / "train.bin", meta["dtype"]), _read(path / "val.bin", meta["dtype"]), meta)


def prepare_tokens(spec: DataSpec, tokenizer, tokens_dir: str | Path, num_proc: int | None = None,
                   log=print) -> TokenData:
    """Reuse `tokens_dir` when its fingerprint matches, else tokenize into it (atomically: staging dir + rename).

    Call it on the main process first (`accelerator.local_main_process_first()`), so other ranks find it ready.
    """
    path = Path(tokens_dir)
    fp = fingerprint(spec, tokenizer)
    meta_path = path / META
    if meta_path.is_file():
        try:
            if json.loads(meta_path.read_text()).get("fingerprint") == fp:
                data = load_tokens(path)
                log(f"pretrain: reusing tokenized data in {path} ({data.meta['train_tokens']:,} train tokens)")
                return data
        except (OSError, ValueError, KeyError):
            pass  # unreadable: rebuild
    if path.exists() and not meta_path.is_file() and any(path.iterdir()):
        raise GroundupError(f"tokens_dir {path} exists and holds something else than tokenized data; pick another")
    path.parent.mkdir(parents=True, exist_ok=True)
    from groundup.core.outputs import remove_stale_staging

    remove_stale_staging(path)  # what a tokenization killed midway left
    staging = path.parent / f".{path.name}.tmp-{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir()
    try:
        meta = _build(spec, tokenizer, staging, num_proc)
        if meta["train_tokens"] == 0:
            raise GroundupError(f"dataset {spec.dataset}: empty, no non-empty text in column {spec.text_column!r}")
        meta["fingerprint"] = fp
        (staging / META).write_text(json.dumps(meta, indent=1) + "\n")
        old = path.parent / f".{path.name}.old-{os.getpid()}"
        if path.exists():
            path.rename(old)
        staging.rename(path)
        shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    data = load_tokens(path)
    m = data.meta
    log(f"pretrain: tokenized {m['train_documents']:,} + {m['val_documents']:,} documents into "
        f"{m['train_tokens']:,} train + {m['val_tokens']:,} val tokens ({m['dtype']}) in {m['tokenize_seconds']}s "
        f"-> {path}")
    return data


# --------------------------------------------------------------------------------------------------- bytes per token

def _byte_decoder() -> dict[str, int]:
    """GPT-2's byte-level alphabet, reversed: each of 256 printable characters stands for one byte."""
    bs = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return {chr(c): b for b, c in zip(bs, cs)}


def token_byte_lengths(tokenizer, vocab_size: int) -> np.ndarray:
    """UTF-8 bytes each token id stands for; 0 for special tokens and unused rows (left out of bits-per-byte)."""
    decoder = _byte_decoder()
    special = set(tokenizer.all_special_ids) | {tokenizer.convert_tokens_to_ids(t) for t in
                                                tokenizer.get_added_vocab()}
    lengths = np.zeros(vocab_size, dtype=np.int64)
    for token, i in tokenizer.get_vocab().items():
        if i in special or i >= vocab_size:
            continue
        if all(ch in decoder for ch in token):
            lengths[i] = len(token)  # one character per byte
        else:  # not a byte-level vocabulary: fall back to the decoded text
            lengths[i] = len(tokenizer.convert_tokens_to_string([token]).encode("utf-8"))
    return lengths


# --------------------------------------------------------------------------------------------------- batches

class Windows:
    """Training rows: windows of `seq_len + 1` tokens, visited in a seeded order that depends only on the row index.

    Row k of the infinite stream lies in epoch k // n_windows; each epoch has its own permutation and its own start
    offset (so documents are not always cut at the same places). Step s of a run with global batch G reads rows
    [s*G, (s+1)*G); each process takes its own slice. Same rows for any number of processes.
    """

    def __init__(self, tokens: np.ndarray, seq_len: int, seed: int):
        self.tokens, self.seq_len, self.seed = tokens, seq_len, seed
        usable = len(tokens) - 1
        if usable < seq_len:
            raise GroundupError(f"only {len(tokens)} training tokens, fewer than seq_length + 1 = {seq_len + 1}; "
                                f"use more data or a shorter seq_length")
        self.n_windows = usable // seq_len - 1 if usable >= 2 * seq_len else usable // seq_len
        self.slack = usable - self.n_windows * seq_len
        self._epoch: int | None = None
        self._perm: np.ndarray | None = None
        self._offset = 0

    def _starts(self, epoch: int) -> tuple[np.ndarray, int]:
        if epoch != self._epoch:
            rng = np.random.default_rng([self.seed, epoch])
            self._perm = rng.permutation(self.n_windows)
            self._offset = int(rng.integers(0, self.slack + 1))
            self._epoch = epoch
        return self._perm, self._offset

    def rows(self, first: int, count: int) -> np.ndarray:
        out = np.empty((count, self.seq_len + 1), dtype=np.int64)
        for i, k in enumerate(range(first, first + count)):
            perm, offset = self._starts(k // self.n_windows)
            start = offset + int(perm[k % self.n_windows]) * self.seq_len
            out[i] = self.tokens[start: start + self.seq_len + 1]
        return out

    def epoch_of(self, row: int) -> float:
        return row / self.n_windows


def eval_windows(tokens: np.ndarray, seq_len: int, max_windows: int, n_processes: int) -> int:
    """How many consecutive validation windows to use: as many as fit, at most `max_windows`, a multiple of the
    number of processes (sharded models need every rank to run the same number of forward passes)."""
    available = max(len(tokens) - 1, 0) // seq_len
    return (min(available, max_windows) // n_processes) * n_processes
