"""Direct preference optimisation with TRL (LoRA with the adapter-off model as reference, or full with a reference
copy or precomputed reference log-probs): YAML -> TrlParser -> DPOTrainer -> a model folder.

    accelerate launch recipes/dpo.py --config recipes/tiny/dpo.yaml [--key value ...]
    accelerate launch --config_file accelerate_configs/multi_gpu.yaml recipes/dpo.py --config recipes/gpt2-124m/dpo.yaml
each with the run's paths as flags (--model_name_or_path, --datasets, --output_dir; the YAMLs hold settings only):
`groundup speedrun --preset tiny --dry-run` prints each step's full command.
"""

import sys

from groundup.cli import run_stage
from groundup.train.dpo import main

if __name__ == "__main__":
    sys.exit(run_stage(main))
