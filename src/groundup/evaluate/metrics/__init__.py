"""Evaluation modules for `evaluate.load`, shipped inside the package so they load offline by absolute path.

    import evaluate
    from groundup.evaluate.metrics import HONESTY_METRIC
    honesty = evaluate.load(HONESTY_METRIC)
"""

from pathlib import Path

HONESTY_METRIC = str(Path(__file__).resolve().parent / "honesty")


def load_honesty(**kwargs):
    """`evaluate.load` of the honesty metric by its absolute path (no Hub access)."""
    import evaluate

    return evaluate.load(HONESTY_METRIC, **kwargs)
