"""The `honesty` evaluate module lives in honesty.py; load it with `evaluate.load(groundup.evaluate.metrics.HONESTY_METRIC)`."""
