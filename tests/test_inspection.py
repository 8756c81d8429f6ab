import pytest

from groundup.core.errors import GroundupError
from groundup.evaluate.inspection import main


def test_inspect_writes_one_attention_png_per_layer_and_a_candidates_png(tiny_model_dir, tmp_path):
    written = main(["--model", str(tiny_model_dir), "--prompt", "In which city was Arbel Cornwood born?",
                    "--output_dir", str(tmp_path), "--max_new_tokens", "4"])
    names = sorted(p.name for p in written)
    assert names == ["attention_layer0.png", "attention_layer1.png", "next_token.png"]  # the fixture has 2 layers
    for path in written:
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 2000


def test_inspect_refuses_a_prompt_longer_than_the_context(tiny_model_dir, tmp_path):
    with pytest.raises(GroundupError, match="context is 128"):
        main(["--model", str(tiny_model_dir), "--prompt", "word " * 300, "--output_dir", str(tmp_path)])


class _Inductor:
    """A stand-in model with a perfect induction head: at each position it predicts the token that followed the
    latest earlier occurrence of the current token (nothing, i.e. token 0, when there is none)."""

    def __init__(self, vocab_size, n_positions):
        import torch

        self.config = type("Config", (), {"n_positions": n_positions})()
        self.training = False
        self._weight = torch.nn.Parameter(torch.zeros(1))
        self.vocab_size = vocab_size

    def parameters(self):
        return iter([self._weight])

    def eval(self):
        return self

    def train(self, mode=True):
        return self

    def __call__(self, input_ids):
        import torch

        logits = torch.zeros(*input_ids.shape, self.vocab_size)
        for b, row in enumerate(input_ids.tolist()):
            last_seen = {}
            for i, token in enumerate(row):
                if token in last_seen and last_seen[token] + 1 < len(row):
                    logits[b, i, row[last_seen[token] + 1]] = 1.0
                last_seen[token] = i
        return type("Output", (), {"logits": logits})()


def test_copy_check_tells_a_model_that_copies_from_one_that_cannot(tiny_model_dir):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from groundup.evaluate.inspection import copy_check

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    inductor = copy_check(_Inductor(len(tokenizer), 128), tokenizer)
    assert inductor["repeated"] > 0.95 and inductor["first"] < 0.05
    untrained = copy_check(AutoModelForCausalLM.from_pretrained(tiny_model_dir), tokenizer)
    assert untrained["repeated"] < 0.05 and set(untrained) == {"repeated", "first"}
