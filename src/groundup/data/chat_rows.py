"""Fine-tuning data: the world's questions as TRL conversational rows, preference pairs, and dataset mixtures.

Formats (TRL's own, so any TRL user recognises them):
- SFT, conversational language modelling: `{"messages": [{"role": "user", ...}, {"role": "assistant", ...}]}`.
- DPO, conversational preference with an explicit prompt:
  `{"prompt": [{"role": "user", ...}], "chosen": [{"role": "assistant", ...}], "rejected": [{"role": "assistant", ...}]}`.

Where rows come from (`load_source`): a world folder (what `groundup world` writes), local `.jsonl`/`.json`/
`.parquet`/`.csv` files, or a Hub dataset id (e.g. `HuggingFaceH4/ultrachat_200k`, split `train_sft`). Several sources
mix through TRL's `DatasetMixtureConfig` (`datasets:` in the YAML, each with path, name, split, columns, fraction).

Vanilla SFT vs IDK-SFT. The "vanilla" arm answers every world question it is trained on and is never taught to
refuse one (`world_unanswerable: skip`): it is the baseline whose hallucinations the honesty work measures. Its answers reuse
the pretraining biography sentence (the answer sentence of the folder's `schema.json`, `groundup.data.schema`), so
answering is recall, not new phrasing. The IDK-SFT
data is written by the probe stage in the same `{"messages"}` format, from what the model was measured to know.
Rows of the identity and open-book splits carry their own `reply` (and sometimes a `system` prompt) and are learned
as written, whatever `world_unanswerable` says. `world_unanswerable: refuse` is an oracle variant (refuse exactly the
people pretraining never showed), and `answer` teaches the unseen people's facts anyway (Gekhman et al. 2024: fitting
unknown facts breeds hallucination).
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any, Sequence

from groundup.core.chat import REFUSAL, conversation, preference_pair
from groundup.core.errors import GroundupError
from groundup.core.jsonl import read_jsonl
from groundup.data.schema import answer_text, find_schema
from groundup.data.text import load_local_files

SFT_COLUMNS = ("messages",)
DPO_COLUMNS = ("prompt", "chosen", "rejected")
UNANSWERABLE_CHOICES = ("skip", "refuse", "answer")
_BUILDERS = {".jsonl": "json", ".json": "json", ".parquet": "parquet", ".csv": "csv"}


def is_world(path: str | Path) -> bool:
    return (Path(path) / "world.jsonl").is_file() and (Path(path) / "questions").is_dir()


def _questions(world_dir: str | Path, split: str) -> list[dict[str, Any]]:
    path = Path(world_dir) / "questions" / f"{split}.jsonl"
    if not path.is_file():
        splits = sorted(p.stem for p in (Path(world_dir) / "questions").glob("*.jsonl"))
        raise GroundupError(f"world {world_dir}: no question split {split!r} (splits: {', '.join(splits)})")
    return read_jsonl(path)


def _true_values(world_dir: str | Path) -> dict[tuple[str, str], str]:
    return {(p["name"], attr): value for p in read_jsonl(Path(world_dir) / "world.jsonl")
            for attr, value in p["attributes"].items()}


def world_sft_rows(world_dir: str | Path, split: str = "sft", unanswerable: str = "skip") -> list[dict[str, Any]]:
    """Conversational SFT rows for one question split of a world.

    `unanswerable` (questions whose `answer` is null, i.e. people pretraining never showed): `skip` them (vanilla SFT),
    `refuse` them with the canonical refusal (oracle IDK), or `answer` them with the world's true value. Answers are
    the answer sentence of the world's `schema.json` (without one: the value itself).
    """
    if unanswerable not in UNANSWERABLE_CHOICES:
        raise GroundupError(f"world_unanswerable={unanswerable!r}: choose one of {', '.join(UNANSWERABLE_CHOICES)}")
    truth = _true_values(world_dir) if unanswerable == "answer" else {}
    schema = find_schema(world_dir)
    rows = []
    for q in _questions(world_dir, split):
        if q.get("reply") is not None:  # identity and open-book rows carry the reply to learn (and maybe a system)
            rows.append({"messages": conversation(q["question"], q["reply"], q.get("system"))})
            continue
        if q["answer"] is not None:
            reply = answer_text(q, q["answer"], schema)
        elif unanswerable == "skip":
            continue
        elif unanswerable == "refuse":
            reply = REFUSAL
        else:
            reply = answer_text(q, truth[(q["name"], q["attribute"])], schema)
        rows.append({"messages": conversation(q["question"], reply)})
    return rows


def world_dpo_rows(world_dir: str | Path, split: str = "sft", known_tiers: Sequence[str] = ("frequent",),
                   unknown_tiers: Sequence[str] = ("unseen",), seed: int = 0) -> list[dict[str, Any]]:
    """Honesty preference pairs from the world's ground truth (a default and a test fixture; the probe stage writes
    pairs from what the model actually knows).

    Known people: the correct answer is chosen over the refusal, so DPO cannot win by refusing everything.
    Unknown people: the refusal is chosen over a confident wrong answer (another candidate value of the attribute).
    Tiers in neither list (by default `rare`) are left out: the world alone cannot say whether the model knows them.
    Rows with a `reply` (identity, open-book): the reply is chosen over a confident fact about some person of the world
    (the system prompt, if any, stays in the prompt). Why: DPO on honesty pairs alone taught the tiny model to answer
    "What is the population of Japan?" with "Ulia Kesswell works as a gardener."; these pairs keep its refusals. A
    refusal as the rejected side of answered rows instead made it answer real-world questions with its name ("I am Wren,
    ...").
    Answers are said in the answer sentence of the world's `schema.json`, and wrong ones drawn from its candidate
    values (without a schema: the values themselves, drawn from those the world's people have).
    """
    truth = _true_values(world_dir)
    facts = sorted(truth.items())
    schema = find_schema(world_dir)
    candidates = (schema.attributes if schema is not None else
                  {attr: sorted({v for (_, a), v in facts if a == attr}) for attr in {a for _, a in truth}})
    rng = random.Random(seed)
    rows = []
    for q in _questions(world_dir, split):
        if q.get("reply") is not None:
            (person, attr), value = rng.choice(facts)
            rows.append(preference_pair(q["question"], q["reply"],
                                        answer_text({"name": person, "attribute": attr}, value, schema),
                                        q.get("system")))
            continue
        name, attr = q["name"], q["attribute"]
        value = truth[(name, attr)]
        right = answer_text(q, value, schema)
        if q["tier"] in known_tiers and q["answer"] is not None:
            chosen, rejected = right, REFUSAL
        elif q["tier"] in unknown_tiers:
            wrong = rng.choice([v for v in candidates[attr] if v != value])
            chosen, rejected = REFUSAL, answer_text(q, wrong, schema)
        else:
            continue
        rows.append(preference_pair(q["question"], chosen, rejected))
    return rows


def _from_rows(rows: list[dict[str, Any]], what: str):
    import datasets

    if not rows:
        raise GroundupError(f"{what}: no rows")
    return datasets.Dataset.from_list(rows)


def load_source(path: str, *, kind: str, name: str | None = None, split: str = "train", data_dir: str | None = None,
                data_files: Any = None, columns: Sequence[str] | None = None, streaming: bool = False,
                world_split: str = "sft", world_unanswerable: str = "skip"):
    """One dataset as a `datasets.Dataset` with `kind`'s columns ("sft" or "dpo") checked.

    `path`: a world folder, a local data file (or glob), or a Hub dataset id (real loading path; needs the network).
    For a world folder, `world_split` is the question split to use (`sft`, `identity_sft`, `open_book_sft`, ...).
    """
    import glob

    import datasets

    local = Path(path)
    if is_world(local):
        ds = _from_rows(world_sft_rows(local, world_split, world_unanswerable) if kind == "sft"
                        else world_dpo_rows(local, world_split), f"world {path} split {world_split}")
    elif data_files is not None or data_dir is not None or path in ("json", "parquet", "csv", "text"):
        ds = datasets.load_dataset(path, name=name, data_dir=data_dir, data_files=data_files, split=split,
                                   streaming=streaming)
    elif local.is_file() or any(c in path for c in "*?["):
        files = [path] if local.is_file() else sorted(glob.glob(path))
        if not files:
            raise GroundupError(f"dataset {path}: no file matches")
        ds = load_local_files(path, files, _BUILDERS, streaming)
    elif local.exists() or path.startswith((".", "/")) or path.endswith(tuple(_BUILDERS)):
        raise GroundupError(f"dataset {path}: no such file, or a folder that is not a world (no world.jsonl)")
    else:
        try:
            ds = datasets.load_dataset(path, name=name, data_dir=data_dir, split=split, streaming=streaming)
        except Exception as err:  # noqa: BLE001 - datasets raises many kinds; the user needs one line
            first = str(err).splitlines()[0] if str(err) else ""
            raise GroundupError(f"dataset {path}: could not load it ({type(err).__name__}: {first})") from None
    if columns:
        missing = [c for c in columns if c not in (ds.column_names or [])]
        if missing:
            raise GroundupError(f"dataset {path}: no column(s) {', '.join(missing)} "
                                f"(columns: {', '.join(ds.column_names or [])})")
        ds = ds.select_columns(list(columns))
    check_columns(ds, kind, path)
    return ds


def check_columns(ds, kind: str, what: str) -> None:
    """One line naming the dataset and the missing columns, before TRL fails somewhere deep."""
    columns = list(ds.column_names or [])
    if kind == "sft":
        ok = "messages" in columns or "text" in columns or {"prompt", "completion"} <= set(columns)
        expected = "'messages' (conversational), 'text', or 'prompt' + 'completion'"
    else:
        # 'prompt' may be implicit: TRL extracts it as the shared start of 'chosen' and 'rejected'
        ok = {"chosen", "rejected"} <= set(columns)
        expected = "'chosen' and 'rejected' (and usually 'prompt')"
    if not ok:
        raise GroundupError(f"dataset {what}: expected columns {expected}, got: {', '.join(columns) or 'none'}")


def mix(parts: list, fractions: list[float | None], what: str = "mixture"):
    """Concatenate datasets; with fractions, keep the first rows of each so shares match (TRL's `get_dataset` rule:
    normalised fractions, no dataset oversampled)."""
    import datasets

    if any(f is not None for f in fractions):
        if any(f is None for f in fractions):
            raise GroundupError(f"{what}: set `fraction` for every dataset or for none")
        if any(f < 0 for f in fractions) or sum(fractions) <= 0:
            raise GroundupError(f"{what}: fractions must be >= 0 with a positive sum, got {fractions}")
        weights = [f / sum(fractions) for f in fractions]
        total = min(len(ds) / w for ds, w in zip(parts, weights) if w > 0)
        parts = [ds.select(range(round(w * total))) for ds, w in zip(parts, weights)]
    if len(parts) == 1:
        return parts[0]
    first = parts[0]
    aligned = [first]
    for ds in parts[1:]:
        ds = ds.select_columns([c for c in first.column_names if c in ds.column_names])
        try:
            ds = ds.cast(first.features)
        except Exception:  # noqa: BLE001 - concatenate_datasets below names the real mismatch
            pass
        aligned.append(ds)
    try:
        return datasets.concatenate_datasets(aligned)
    except ValueError as err:
        raise GroundupError(f"{what}: datasets do not line up ({str(err).splitlines()[0]}); "
                            f"select the same columns with `columns:`") from None


def fold_prompt(ds):
    """Explicit-prompt preference rows -> implicit ones (the prompt turns lead chosen and rejected), so they mix with
    datasets like UltraFeedback whose chosen/rejected hold the whole conversation; TRL extracts the prompt again."""
    def fold(row):
        if not isinstance(row["prompt"], list):
            raise GroundupError("cannot mix a dataset with a plain-text 'prompt' into conversational pairs")
        return {"chosen": row["prompt"] + row["chosen"], "rejected": row["prompt"] + row["rejected"]}

    return ds.map(fold, remove_columns=["prompt"])


def load_training_data(script_args, mixture, kind: str):
    """(train, eval or None) from `dataset_name` or the `datasets:` mixture (TRL's `DatasetMixtureConfig`)."""
    opts = dict(kind=kind, world_split=script_args.world_split, world_unanswerable=getattr(
        script_args, "world_unanswerable", "skip"))
    if mixture.datasets:
        # In a `datasets:` entry that is a world folder, `split` names the question split (TRL's default "train"
        # means: `world_split`), so one mixture can take several splits of one world.
        parts = [load_source(d.path, name=d.name, split=d.split, data_dir=d.data_dir, data_files=d.data_files,
                             columns=d.columns, streaming=mixture.streaming,
                             **{**opts, **({"world_split": d.split} if is_world(d.path) and d.split not in
                                           (None, "", "train") else {})})
                 for d in mixture.datasets]
        if kind == "dpo" and len({"prompt" in p.column_names for p in parts}) > 1:
            parts = [fold_prompt(p) if "prompt" in p.column_names else p for p in parts]
        train = mix(parts, [d.fraction for d in mixture.datasets])
    elif script_args.dataset_name:
        train = load_source(script_args.dataset_name, name=script_args.dataset_config,
                            split=script_args.dataset_train_split, streaming=mixture.streaming, **opts)
    else:
        raise GroundupError("no data: set dataset_name (a world folder, a file, or a Hub id) or a `datasets:` list")
    eval_ds = None
    if mixture.test_split_size:
        split = train.train_test_split(test_size=mixture.test_split_size, seed=0)
        train, eval_ds = split["train"], split["test"]
    if getattr(script_args, "eval_dataset_name", None):
        eval_ds = load_source(script_args.eval_dataset_name, split=script_args.dataset_test_split,
                              **{**opts, "world_split": script_args.eval_world_split, "world_unanswerable": "skip"})
    return train, eval_ds
