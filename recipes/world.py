"""Generate the fictional world: people, pretraining corpus, question files.

    python recipes/world.py --config recipes/tiny/world.yaml [--seed 1 --output_dir runs/seed1/data]
"""

import sys

from groundup.cli import run_stage
from groundup.world.generate import main

if __name__ == "__main__":
    sys.exit(run_stage(main))
