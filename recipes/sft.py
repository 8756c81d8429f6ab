"""Supervised fine-tuning with TRL (full, LoRA or QLoRA): YAML -> TrlParser -> SFTTrainer -> a model folder.

    accelerate launch recipes/sft.py --config recipes/tiny/sft.yaml [--key value ...]
    python recipes/sft.py --config recipes/tiny/sft_idk.yaml
    accelerate launch --config_file accelerate_configs/multi_gpu.yaml recipes/sft.py --config recipes/gpt2-124m/sft.yaml
each with the run's paths as flags (--model_name_or_path, --datasets, --output_dir ...; the YAMLs hold settings only):
`groundup speedrun --preset tiny --dry-run` prints each step's full command.
"""

import sys

from groundup.cli import run_stage
from groundup.train.sft import main

if __name__ == "__main__":
    sys.exit(run_stage(main))
