"""Generate the fictional world: people, pretraining corpus, question files.

    python recipes/world.py --config recipes/tiny/world.yaml --output_dir runs/tiny/data [--seed 1]
"""

import sys

from groundup.cli import run_stage
from groundup.world.generate import main

if __name__ == "__main__":
    sys.exit(run_stage(main))
