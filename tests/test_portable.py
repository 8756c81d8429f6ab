"""Folders load in transformers 4.x as in 5.x: the tokenizer config in a form both read (core/portable.py), the
model's context as the tokenizer's `model_max_length`, and `n_ctx` in the GPT-2 config for llama.cpp's converter.

transformers 4.57 cannot live in this environment next to 5.x; the checks here are what 4.x needs from the files
(a tokenizer class it has, `extra_special_tokens` never a list). With TRANSFORMERS4_PYTHON set to the python of a
virtualenv holding transformers 4.57 (docs/ecosystem.md says how to make one), the last test loads the folders there.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess

import pytest

from groundup.core.chat import REFUSAL, TURN_END
from groundup.core.portable import PORTABLE_TOKENIZER_CLASS, make_portable, portable_tokenizer_config

pytestmark = pytest.mark.usefixtures("one_torch_thread")

# Tokenizer classes transformers 4.57's AutoTokenizer resolves (a sample; TokenizersBackend is 5.x only).
CLASSES_4X = {"PreTrainedTokenizerFast", "GPT2TokenizerFast", "GPT2Tokenizer"}
TEXTS = ["Hello world", " Où est Zoë? 1987", f"In which city?{TURN_END}\n<|im_start|>assistant\n{REFUSAL}"]


def _config(folder):
    return json.loads((folder / "tokenizer_config.json").read_text())


def _assert_loads_in_4x(config):
    assert config["tokenizer_class"] in CLASSES_4X
    assert not isinstance(config.get("extra_special_tokens"), list)  # 4.x: 'list' object has no attribute 'keys'
    assert "is_local" not in config and "local_files_only" not in config


@pytest.fixture(scope="module")
def model_dir(tokenizer_dir, tmp_path_factory):
    """A model folder saved the way the stages save one (build_config, save_pretrained, make_portable)."""
    import torch
    from transformers import AutoTokenizer, GPT2LMHeadModel

    from groundup.models.gpt2 import build_config

    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    torch.manual_seed(0)
    model = GPT2LMHeadModel(build_config(tokenizer, n_layer=1, n_embd=32, n_head=2, n_positions=96))
    out = tmp_path_factory.mktemp("portable") / "model"
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    make_portable(out)
    return out


def test_the_tokenizer_stage_saves_a_config_transformers_4_reads(tokenizer_dir):
    config = _config(tokenizer_dir)
    _assert_loads_in_4x(config)
    assert config["tokenizer_class"] == PORTABLE_TOKENIZER_CLASS
    assert set(config["additional_special_tokens"]) == {"<|endoftext|>", "<|im_start|>", "<|im_end|>"}
    assert (tokenizer_dir / "chat_template.jinja").is_file()  # 4.57 reads the template from here too


def test_model_folder_carries_its_context_as_model_max_length_and_n_ctx(model_dir):
    assert _config(model_dir)["model_max_length"] == 96
    config = json.loads((model_dir / "config.json").read_text())
    assert config["n_ctx"] == config["n_positions"] == 96


def test_n_ctx_changes_no_weight(tokenizer_dir):
    import torch
    from transformers import AutoTokenizer, GPT2Config, GPT2LMHeadModel

    from groundup.models.gpt2 import build_config

    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    config = build_config(tokenizer, n_layer=1, n_embd=32, n_head=2, n_positions=64)
    plain = GPT2Config(**{k: v for k, v in config.to_dict().items() if k != "n_ctx"})
    models = []
    for c in (config, plain):
        torch.manual_seed(0)
        models.append(GPT2LMHeadModel(c).eval())
    ids = torch.tensor([tokenizer("Hello world")["input_ids"]])
    assert all(torch.equal(a, b) for a, b in zip(models[0].state_dict().values(), models[1].state_dict().values()))
    assert torch.equal(models[0](ids).logits, models[1](ids).logits)


def test_transformers_5_loads_the_portable_folder_exactly_as_its_own(model_dir, tmp_path):
    from transformers import AutoTokenizer

    own = tmp_path / "own"
    AutoTokenizer.from_pretrained(model_dir).save_pretrained(own)  # 5.x's own form: TokenizersBackend, a list
    assert _config(own)["tokenizer_class"] == "TokenizersBackend"
    a, b = AutoTokenizer.from_pretrained(model_dir), AutoTokenizer.from_pretrained(own)
    assert type(a) is type(b) and a.all_special_tokens == b.all_special_tokens and a.unk_token is None
    assert (a.bos_token, a.eos_token, a.pad_token) == (b.bos_token, b.eos_token, b.pad_token)
    for text in TEXTS:
        assert a(text)["input_ids"] == b(text)["input_ids"]
    messages = [{"role": "user", "content": "Who?"}, {"role": "assistant", "content": REFUSAL}]
    assert a.apply_chat_template(messages, tokenize=False) == b.apply_chat_template(messages, tokenize=False)


def test_portable_config_is_idempotent_and_leaves_other_classes_alone():
    config = {"tokenizer_class": "TokenizersBackend", "extra_special_tokens": ["<a>"], "is_local": True,
              "local_files_only": False, "model_max_length": 10**30}
    once = portable_tokenizer_config(config, 128)
    assert once == portable_tokenizer_config(once, 128)
    assert once == {"additional_special_tokens": ["<a>"], "model_max_length": 128,
                    "tokenizer_class": "PreTrainedTokenizerFast"}
    assert portable_tokenizer_config({"tokenizer_class": "Qwen2Tokenizer"})["tokenizer_class"] == "Qwen2Tokenizer"


_LOAD_4X = """
import json, sys
import transformers
from transformers import AutoModelForCausalLM, AutoTokenizer
assert transformers.__version__.startswith("4."), transformers.__version__
out = {}
for folder in sys.argv[1:]:
    t = AutoTokenizer.from_pretrained(folder)
    AutoModelForCausalLM.from_pretrained(folder)
    out[folder] = {"ids": [t(x)["input_ids"] for x in TEXTS],
                   "template": t.apply_chat_template([{"role": "user", "content": "Who?"}], tokenize=False,
                                                     add_generation_prompt=True),
                   "max": t.model_max_length, "eos": t.eos_token, "unk": t.unk_token}
print(json.dumps(out))
"""


def test_transformers_4_loads_the_folder_when_a_4x_python_is_given(model_dir):
    from transformers import AutoTokenizer

    python = os.environ.get("TRANSFORMERS4_PYTHON")
    if not python or not shutil.which(python):
        pytest.skip("set TRANSFORMERS4_PYTHON to the python of a virtualenv with transformers 4.57")
    script = _LOAD_4X.replace("TEXTS", json.dumps(TEXTS))
    result = subprocess.run([python, "-c", script, str(model_dir)], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    got = json.loads(result.stdout.strip().splitlines()[-1])[str(model_dir)]
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    assert got["ids"] == [tokenizer(x)["input_ids"] for x in TEXTS]
    assert got["template"] == tokenizer.apply_chat_template([{"role": "user", "content": "Who?"}], tokenize=False,
                                                            add_generation_prompt=True)
    assert (got["max"], got["eos"], got["unk"]) == (96, TURN_END, None)
