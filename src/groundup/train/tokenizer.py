"""Train a byte-level BPE tokenizer with `tokenizers` and save it as a transformers fast tokenizer.

Byte-level BPE (GPT-2 style) never meets an unknown character: any Unicode string round-trips exactly. The
tokenizer is trained on the corpus *and* on the chat and refusal text the model will have to emit, because a word
absent from the training text becomes one token per character with embeddings pretraining never trained.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

from groundup.core.chat import (CHAT_TEMPLATE, DOC_TOKEN, PAD_TOKEN, REFUSAL, SPECIAL_TOKENS, TURN_END, TURN_START, conversation,
                   render_chat)
from groundup.core.errors import GroundupError
from groundup.data.text import is_world_dir, iter_texts, load_text_dataset

STATS_FILE = "tokenizer_stats.json"
BYTE_ALPHABET = 256

# Chat text for sources that are not a world: the turn markers and the refusal still need merges of their own.
_GENERIC_CHAT = [
    [{"role": "system", "content": "You are a helpful, honest assistant."},
     {"role": "user", "content": "Who won the match yesterday?"}, {"role": "assistant", "content": REFUSAL}],
    [{"role": "user", "content": "What is the capital of a country you have never heard of?"},
     {"role": "assistant", "content": REFUSAL}],
]


@dataclass
class TokenizerArguments:
    """`groundup tokenizer`: train a byte-level BPE tokenizer with chat special tokens and a chat template."""

    output_dir: str | None = field(default=None, metadata={"help": "Folder for the tokenizer (required)."})
    overwrite: bool = field(default=False, metadata={"help": "Replace a non-empty output folder."})
    dataset: str | None = field(
        default=None,
        metadata={"help": "A world folder, local text/jsonl/parquet/csv files (globs allowed), or a Hub dataset id "
                  "(required)."},
    )
    dataset_config: str | None = field(default=None, metadata={"help": "Hub dataset configuration name."})
    dataset_split: str = field(default="train", metadata={"help": "Hub dataset split."})
    text_column: str = field(default="text", metadata={"help": "Column holding the text."})
    streaming: bool = field(default=False, metadata={"help": "Stream the dataset instead of downloading it whole."})
    max_documents: int | None = field(default=None, metadata={"help": "Train on at most this many documents."})
    heldout_documents: int = field(
        default=200, metadata={"help": "Documents kept out of training to measure compression (bytes per token)."}
    )
    vocab_size: int = field(default=2048, metadata={"help": "Target vocabulary size, special tokens included."})
    min_frequency: int = field(default=2, metadata={"help": "A pair must occur this often to be merged."})
    add_chat_text: bool = field(
        default=True, metadata={"help": "Also train on chat turns and refusals (from the world's question files)."}
    )
    chat_world: str | None = field(
        default=None,
        metadata={"help": "World folder whose Q&A become chat training text; default: `dataset` if it is a world."},
    )

    def __post_init__(self):
        minimum = BYTE_ALPHABET + len(SPECIAL_TOKENS)
        if self.vocab_size < minimum:
            raise ValueError(f"vocab_size={self.vocab_size} is below the byte alphabet plus special tokens "
                             f"({BYTE_ALPHABET} + {len(SPECIAL_TOKENS)} = {minimum})")
        if self.min_frequency < 1:
            raise ValueError(f"min_frequency must be at least 1, got {self.min_frequency}")
        if self.heldout_documents < 0:
            raise ValueError(f"heldout_documents must be >= 0, got {self.heldout_documents}")


def chat_texts(world_dir: str | Path | None) -> list[str]:
    """Rendered conversations the model will produce: the world's SFT and probe Q&A, answered (in the answer sentence
    of its `schema.json`, as SFT answers) or refused, and the identity conversations (the assistant's name and maker
    would otherwise be split into single bytes)."""
    from groundup.core.jsonl import read_jsonl
    from groundup.data.schema import answer_text, find_schema

    conversations = list(_GENERIC_CHAT)
    if world_dir is not None:
        schema = find_schema(world_dir)
        for split in ("sft", "probe", "identity_sft"):
            path = Path(world_dir) / "questions" / f"{split}.jsonl"
            if not path.is_file():
                continue
            for row in read_jsonl(path):
                if row.get("reply") is not None:
                    reply = row["reply"]
                else:
                    reply = REFUSAL if row["answer"] is None else answer_text(row, row["answer"], schema)
                conversations.append(conversation(row["question"], reply, row.get("system")))
    return [render_chat(c) for c in conversations]


def train_bpe(texts: Iterable[str], vocab_size: int, min_frequency: int = 2):
    """A byte-level BPE `tokenizers.Tokenizer` with groundup's special tokens (ids 0..3)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    from groundup.core.progress import resolve_mode

    tok = Tokenizer(models.BPE())
    # No normalizer: any normalisation (NFC, lowercasing) would break the lossless byte round trip.
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),  # all 256 bytes, even those the corpus lacks
        show_progress=resolve_mode() == "bar",  # a terminal only; off with TQDM_DISABLE
    )
    tok.train_from_iterator(texts, trainer=trainer)
    return tok


def wrap_for_transformers(tok):
    """The `tokenizers` object as a transformers fast tokenizer with the chat template and special tokens."""
    from transformers import PreTrainedTokenizerFast

    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token=DOC_TOKEN,
        eos_token=TURN_END,  # generation of a chat model ends at end of turn
        pad_token=PAD_TOKEN,
        additional_special_tokens=[DOC_TOKEN, TURN_START, TURN_END],
        chat_template=CHAT_TEMPLATE,
        model_input_names=["input_ids", "attention_mask"],  # GPT-2 would add an embedding for token_type_ids
        clean_up_tokenization_spaces=False,  # the clean-up rewrites " ." as "." and breaks the round trip
    )


def bytes_per_token(tokenizer, texts: list[str]) -> float:
    n_bytes = sum(len(t.encode("utf-8")) for t in texts)
    n_tokens = sum(len(ids) for ids in tokenizer(texts, add_special_tokens=False)["input_ids"])
    return n_bytes / max(n_tokens, 1)


def build_tokenizer(args: TokenizerArguments):
    """Train on the configured source; return (transformers tokenizer, stats dict). Writes nothing."""
    ds = load_text_dataset(args.dataset, args.text_column, args.dataset_config, args.dataset_split, args.streaming)
    texts = iter_texts(ds, args.text_column, args.max_documents)
    heldout = [t for _, t in zip(range(args.heldout_documents), texts)]
    train = list(texts)
    if not train:
        if heldout:
            raise GroundupError(f"dataset {args.dataset}: only {len(heldout)} documents, all needed for "
                                f"heldout_documents={args.heldout_documents}; lower it")
        raise GroundupError(f"dataset {args.dataset}: no non-empty text in column {args.text_column!r}")
    if args.add_chat_text:
        world = args.chat_world or (args.dataset if is_world_dir(args.dataset) else None)
        if world is not None and not is_world_dir(world):
            raise GroundupError(f"chat_world {world}: not a world folder (no corpus.jsonl); run `groundup world`")
        train += chat_texts(world)
    n_bytes = sum(len(t.encode("utf-8")) for t in train)

    start = time.perf_counter()
    tok = train_bpe(train, args.vocab_size, args.min_frequency)
    seconds = time.perf_counter() - start
    tokenizer = wrap_for_transformers(tok)
    stats = {
        "vocab_size": len(tokenizer),  # the real size: BPE stops early when merges run out
        "target_vocab_size": args.vocab_size,
        "train_documents": len(train),
        "train_bytes": n_bytes,
        "train_seconds": round(seconds, 3),
        "train_mb_per_s": round(n_bytes / 1e6 / max(seconds, 1e-9), 3),
        "heldout_documents": len(heldout),
        "heldout_bytes_per_token": round(bytes_per_token(tokenizer, heldout), 3) if heldout else None,
    }
    return tokenizer, stats


def save_tokenizer(tokenizer, stats: dict, out_dir: Path) -> None:
    from groundup.core.portable import make_portable

    tokenizer.save_pretrained(out_dir)
    make_portable(out_dir)  # loads in transformers 4.x too (the model stages set model_max_length)
    (out_dir / STATS_FILE).write_text(json.dumps(stats, indent=1) + "\n")


def describe(stats: dict) -> str:
    compression = stats["heldout_bytes_per_token"]
    return (f"vocab size {stats['vocab_size']} (target {stats['target_vocab_size']}), "
            f"trained on {stats['train_bytes'] / 1e6:.2f} MB at {stats['train_mb_per_s']:.2f} MB/s, "
            + (f"{compression:.2f} bytes/token on {stats['heldout_documents']} held-out documents"
               if compression else "no held-out text for compression"))


def parse_args(argv: list[str] | None = None) -> tuple:
    from groundup.core.configs import parse_config

    return parse_config([TokenizerArguments], argv)


def main(argv: list[str] | None = None) -> Path:
    """Parse the config, train, save the tokenizer folder atomically, print its figures."""
    from groundup.core.configs import save_config
    from groundup.core.outputs import atomic_output_dir, check_output_dir

    from groundup.core.configs import require

    (args,) = parse_args(argv)
    require("tokenizer", {"output_dir": args.output_dir, "dataset": args.dataset})
    check_output_dir(args.output_dir, args.overwrite,  # fail before minutes of training, not after
                     inputs={"dataset": args.dataset})
    tokenizer, stats = build_tokenizer(args)
    with atomic_output_dir(args.output_dir, args.overwrite) as out:
        save_tokenizer(tokenizer, stats, out)
        save_config(out, args)
    print(f"tokenizer: {describe(stats)} -> {args.output_dir}")
    return Path(args.output_dir)
