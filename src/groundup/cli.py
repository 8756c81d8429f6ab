"""`groundup STAGE ...`: every stage from one command. Each stage takes `--config FILE` and `--key value` flags."""

from __future__ import annotations

import importlib
import sys

from groundup.core.errors import GroundupError
from groundup.pipeline.stages import STAGES


USAGE = """usage: groundup STAGE [--config FILE] [--key value ...]

stages:
  world       generate the fictional world, its corpus and question files
  tokenizer   train the byte-level BPE tokenizer with the chat template
  pretrain    pretrain a GPT-2 from scratch (use `accelerate launch recipes/pretrain.py` for several processes)
  sft         supervised fine-tuning with TRL (full, LoRA, QLoRA)
  probe       sample the model k times per question: what does it know? writes IDK-SFT data and DPO pairs
  dpo         direct preference optimisation with TRL
  surprisal-init  assemble a fine-tuned model and its base into a model that reads the base's surprisal
  eval        grade a model's answers: correct / incorrect / refused, hallucination and refusal rates
  report      the run's report card (markdown + plots)
  chat        chat with a model folder in the terminal
  inspect     attention heatmaps and next-token probabilities of a model as PNGs
  push        upload a model folder to the Hugging Face Hub
  export      `export gguf FOLDER [--output FILE]`: a GPT-2 folder as one GGUF file for llama.cpp
  speedrun    run every stage of a preset in order (--preset tiny [--run-dir DIR] [--from STAGE] [--world-seed N])
  compare     several runs' targets side by side, e.g. one preset on several world seeds

`groundup STAGE --help` lists a stage's keys."""


def run_stage(main, argv: list[str] | None = None) -> int:
    """Run a stage's `main`, turning bad input into one clear line and exit code 2."""
    from groundup.core.progress import library_bars, resolve_mode

    library_bars(resolve_mode() == "bar")  # no bar frames in a redirected log; TQDM_DISABLE=1 turns them off too
    try:
        main(argv)
    except GroundupError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as err:  # noqa: BLE001 - only a full disk or a read-only folder is turned into one line
        line = storage_error(err)
        if line is None:
            raise
        print(f"error: {line}", file=sys.stderr)
        return 2
    return 0


def storage_error(err: BaseException) -> str | None:
    """A full disk or a read-only folder met mid-stage, wherever it surfaced (torch and safetensors wrap the OSError
    in their own errors), as one line; None for anything else."""
    import errno

    from groundup.core.outputs import describe_os_error

    seen = set()
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        if isinstance(err, OSError) and err.errno in (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES,
                                                      errno.EPERM):
            return describe_os_error(err)
        text = str(err)
        if "No space left on device" in text or "file write failed" in text:  # torch.save / safetensors wrap it
            return "disk full: no space left on device while writing; free some space and run again"
        if "Read-only file system" in text:
            return "a read-only file system refused a write; choose a writable output folder"
        err = err.__cause__ or err.__context__
    return None


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(USAGE)
        return 0
    stage, rest = argv[0], argv[1:]
    if stage not in STAGES:
        print(f"error: unknown stage {stage!r}; choose one of: {', '.join(STAGES)}", file=sys.stderr)
        return 2
    try:
        module = importlib.import_module(STAGES[stage])
    except ModuleNotFoundError as err:
        if err.name != STAGES[stage]:
            raise
        print(f"error: stage {stage!r} is not available in this version of groundup", file=sys.stderr)
        return 2
    return run_stage(module.main, rest)


if __name__ == "__main__":
    sys.exit(main())
