"""Pretrain a GPT-2 from scratch with Accelerate: the project's headline command.

    accelerate launch recipes/pretrain.py --config recipes/tiny/pretrain.yaml --tokenizer runs/tiny/tokenizer \
        --dataset runs/tiny/data --output_dir runs/tiny/base
    accelerate launch --config_file accelerate_configs/multi_gpu.yaml recipes/pretrain.py \
        --config recipes/gpt2-124m/pretrain.yaml
    python recipes/pretrain.py --config recipes/tiny/pretrain.yaml ... --resume latest   # one process, continue
The run's paths are flags (the YAMLs hold settings only): `groundup speedrun --preset tiny --dry-run` prints each
step's full command.

The loop lives in src/groundup/pretrain.py; `groundup pretrain ...` is the same stage.
"""

import sys

from groundup.cli import run_stage
from groundup.train.pretrain import main

if __name__ == "__main__":
    sys.exit(run_stage(main))
