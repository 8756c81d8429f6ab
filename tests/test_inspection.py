import pytest

from groundup.errors import GroundupError
from groundup.inspection import main


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
