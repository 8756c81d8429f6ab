"""Probe what a model knows: greedy + k sampled answers per probe-pool question; write IDK-SFT data and DPO pairs.

    python recipes/probe.py --config recipes/tiny/probe.yaml --model runs/tiny/sft \
        --questions runs/tiny/data/questions/probe.jsonl --output_dir runs/tiny/probe [--num_samples 10]
The tiny preset also passes --sft_questions and --rephrasings: `groundup speedrun --preset tiny --dry-run` prints each step's full command.

Outputs (runs/tiny/probe/): probe.jsonl (per question: answers, grades, p_correct, entropy, label), idk_sft.jsonl
({"messages": [user, assistant]}), dpo_pairs.jsonl ({"prompt", "chosen", "rejected"}), probe_metrics.json, recipe.yaml.
"""

import sys

from groundup.cli import run_stage
from groundup.evaluate.probe import main

if __name__ == "__main__":
    sys.exit(run_stage(main))
