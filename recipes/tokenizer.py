"""Train the byte-level BPE tokenizer with chat special tokens and a ChatML template.

    python recipes/tokenizer.py --config recipes/tiny/tokenizer.yaml --dataset runs/tiny/data \
        --output_dir runs/tiny/tokenizer [--vocab_size 4096]
"""

import sys

from groundup.cli import run_stage
from groundup.train.tokenizer import main

if __name__ == "__main__":
    sys.exit(run_stage(main))
