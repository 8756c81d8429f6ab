"""`groundup surprisal-init`: assemble a fine-tuned model and its pretrained base into one surprisal-reading model
folder (`groundup.models.surprisal`), which IDK-SFT then trains (the tiny preset's honest arm). The base's weights go
into the folder's one model.safetensors as the frozen reference (`transformer.reference.*`), and `save_pretrained`
copies the model's code beside them, so the folder loads anywhere with `trust_remote_code=True`.

    groundup surprisal-init --base runs/tiny/base --model runs/tiny/sft --output_dir runs/tiny/sft-surprisal-init
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from groundup.core.errors import GroundupError
from groundup.models.surprisal import assemble


@dataclass
class SurprisalInitArguments:
    """`groundup surprisal-init`: assemble a fine-tuned model and its base into a surprisal-reading model folder."""

    base: str | None = field(default=None, metadata={"help": "The pretrained base, the frozen reference (required)."})
    model: str | None = field(default=None, metadata={"help": "The fine-tuned model to start from (required)."})
    output_dir: str | None = field(default=None, metadata={"help": "Folder to write (required)."})
    overwrite: bool = field(default=False, metadata={"help": "Replace a non-empty output folder."})
    surprisal_bins: int = field(default=10, metadata={"help": "Soft bins of the surprisal."})
    surprisal_max: float = field(default=18.0, metadata={"help": "Centre of the last bin, in nats."})
    copy_max_match: int = field(default=0, metadata={
        "help": "In-context copy feature: each token also reads the token that followed the longest earlier match "
                "of the text ending there (up to this many tokens) and the match's length. 0: off."})
    surprisal_window: int = field(default=0, metadata={
        "help": "Short-context surprisal: each token also reads the reference's surprisal of it after a document "
                "start and only this many tokens before it (1: a last name after its first name, as biographies "
                "begin), beside the full-context surprisal. 0: off."})

    def __post_init__(self):
        for key in ("copy_max_match", "surprisal_window"):  # parse_config turns this into one line naming the key
            if getattr(self, key) < 0:
                raise ValueError(f"{key} must be 0 (off) or more, got {getattr(self, key)}")


def parse_args(argv: list[str] | None = None) -> tuple:
    from groundup.core.configs import parse_config

    return parse_config([SurprisalInitArguments], argv)


def main(argv: list[str] | None = None) -> Path:
    from transformers import AutoTokenizer

    from groundup.core.configs import save_config
    from groundup.core.outputs import atomic_output_dir, check_output_dir
    from groundup.core.portable import make_portable

    from groundup.core.configs import require

    (args,) = parse_args(argv)
    require("surprisal-init", {"base": args.base, "model": args.model, "output_dir": args.output_dir})
    check_output_dir(args.output_dir, args.overwrite, inputs={"base": args.base, "model": args.model})
    from groundup.models.loader import check_folder

    for path in (args.base, args.model):  # a missing folder would surface as a Hub "Repo id must be ..." traceback
        check_folder(path, "model")
        if not Path(path).is_dir():
            raise GroundupError(f"surprisal-init: {path} is not a model folder (both base and model must be local)")
    model = assemble(args.base, args.model, args.surprisal_bins, args.surprisal_max, args.copy_max_match,
                     args.surprisal_window)
    tokenizer = AutoTokenizer.from_pretrained(args.model)
    with atomic_output_dir(args.output_dir, args.overwrite) as out:
        model.save_pretrained(out)
        tokenizer.save_pretrained(out)
        make_portable(out)  # tokenizer_config.json that transformers 4.x loads too
        save_config(out, args)
    print(f"surprisal-init: {args.model} + frozen reference {args.base} -> {args.output_dir}")
    return Path(args.output_dir)
