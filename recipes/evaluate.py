"""Grade a model's answers correct / incorrect / refused; write metrics.json and predictions.jsonl.

    python recipes/evaluate.py --model runs/tiny/sft --questions runs/tiny/data/questions/eval.jsonl \
        --output runs/tiny/eval/sft
    python recipes/evaluate.py --config recipes/tiny/eval.yaml --model runs/tiny/dpo \
        --questions runs/tiny/data/questions/eval.jsonl --output_dir runs/tiny/eval/dpo
    # a base model has no chat behaviour: few-shot plain text from the SFT pool
    python recipes/evaluate.py --config recipes/tiny/eval_base.yaml --model runs/tiny/base \
        --questions runs/tiny/data/questions/eval.jsonl --few_shot_file runs/tiny/data/questions/sft.jsonl \
        --output_dir runs/tiny/eval/base

Any causal LM with a chat template works (`--model Qwen/Qwen2.5-0.5B-Instruct`); `--trust_remote_code true` only if
you trust the model's code.
"""

import sys

from groundup.cli import run_stage
from groundup.evaluate.evaluation import main

if __name__ == "__main__":
    sys.exit(run_stage(main))
