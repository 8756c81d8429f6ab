"""Every model folder loads with transformers alone, in a Python that cannot import groundup: a stock GPT-2 folder as
it is, the surprisal arm with `trust_remote_code=True` from the code its folder carries, giving groundup's own logits
and generations."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest
import torch

pytestmark = pytest.mark.usefixtures("one_torch_thread")

PROMPT = "In which city was Arel Bram born?"
CODE_FILES = ("configuration_groundup_surprisal.py", "modeling_groundup_surprisal.py")

# Runs in `python -I -S`: no site processing, so none of the venv's .pth files (the editable install's path to
# src/ is one), and the cwd is outside the repository; only the venv's site-packages directory is put on sys.path.
CHILD = r"""
import json, sys
sys.path.append(sys.argv[1])
try:
    import groundup
except ImportError:
    pass
else:
    raise SystemExit(f"groundup is importable here: {groundup.__file__}")
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, pipeline

torch.set_num_threads(1)
prompt, stock, surprisal, out = sys.argv[2:6]
result = {}
for name, folder, remote in (("stock", stock, False), ("surprisal", surprisal, True)):
    model = AutoModelForCausalLM.from_pretrained(folder, trust_remote_code=remote).eval()
    tokenizer = AutoTokenizer.from_pretrained(folder, trust_remote_code=remote)
    with torch.no_grad():
        torch.save(model(**tokenizer(prompt, return_tensors="pt")).logits, f"{out}/{name}.pt")
    chat = pipeline("text-generation", folder, trust_remote_code=remote)
    text = chat(prompt, max_new_tokens=6, do_sample=False, return_full_text=False)[0]["generated_text"]
    result[name] = {"class": type(model).__name__, "module": type(model).__module__, "text": text,
                    "pipeline_class": type(chat.model).__name__}
result["groundup_loaded"] = any(m == "groundup" or m.startswith("groundup.") for m in sys.modules)
print(json.dumps(result))
"""


def _own(folder: Path):
    """groundup's own load (no remote code) of a folder: logits on the prompt and the pipeline's greedy text."""
    from transformers import AutoModelForCausalLM, AutoTokenizer, pipeline

    import groundup.models.surprisal  # noqa: F401  (what groundup's loaders import)

    model = AutoModelForCausalLM.from_pretrained(folder).eval()
    tokenizer = AutoTokenizer.from_pretrained(folder)
    with torch.no_grad():
        logits = model(**tokenizer(PROMPT, return_tensors="pt")).logits
    text = pipeline("text-generation", model=model, tokenizer=tokenizer)(
        PROMPT, max_new_tokens=6, do_sample=False, return_full_text=False)[0]["generated_text"]
    return model, logits, text


@pytest.fixture(scope="module")
def surprisal_folder(tiny_model_dir, tmp_path_factory):
    """Every feature on (window surprisal, copy feature) and opened with random weights, so logits differ from the
    plain GPT-2's and depend on the reference's weights being loaded from the folder."""
    from transformers import AutoTokenizer

    from groundup.models.surprisal import assemble

    torch.manual_seed(1)
    model = assemble(tiny_model_dir, tiny_model_dir, copy_max_match=4, surprisal_window=1)
    inner = model.transformer
    for module in (inner.surprisal_embedding, inner.window_surprisal_embedding, inner.copy_gate,
                   inner.copy_length_embedding):
        torch.nn.init.normal_(module.weight, std=0.5)
    with torch.no_grad():  # a reference unlike the main stack, so a wrongly loaded reference shows
        for p in inner.reference.parameters():
            p.add_(0.1 * torch.randn_like(p))
    out = tmp_path_factory.mktemp("remote") / "surprisal"
    model.save_pretrained(out)
    AutoTokenizer.from_pretrained(tiny_model_dir).save_pretrained(out)
    return out


def test_surprisal_init_writes_a_folder_with_its_code(tiny_model_dir, tmp_path):
    from safetensors import safe_open

    from groundup.train.surprisal_init import main

    out = main(["--base", str(tiny_model_dir), "--model", str(tiny_model_dir), "--output_dir", str(tmp_path / "o")])
    config = json.loads((out / "config.json").read_text())
    assert config["auto_map"] == {
        "AutoConfig": "configuration_groundup_surprisal.SurprisalGPT2Config",
        "AutoModelForCausalLM": "modeling_groundup_surprisal.SurprisalGPT2LMHeadModel"}
    for name in CODE_FILES:  # the shipped code imports torch and transformers only
        code = (out / name).read_text()
        assert "import groundup" not in code and "from groundup" not in code, name
    # the base's weights live in the one model.safetensors, as the frozen reference
    with safe_open(out / "model.safetensors", "pt") as ours, \
            safe_open(tiny_model_dir / "model.safetensors", "pt") as base:
        for key in base.keys():
            if key.startswith("transformer."):
                reference_key = key.replace("transformer.", "transformer.reference.", 1)
                assert torch.equal(ours.get_tensor(reference_key), base.get_tensor(key)), key
    assert not list(out.glob("*/*.safetensors"))  # no subfolder to resolve


def test_folders_load_with_transformers_alone_as_groundup_loads_them(surprisal_folder, tiny_model_dir, tmp_path):
    from groundup.models.surprisal import SurprisalGPT2LMHeadModel

    assert not any((tiny_model_dir / name).exists() for name in CODE_FILES)
    assert "auto_map" not in json.loads((tiny_model_dir / "config.json").read_text())
    own_model, own_logits, own_text = _own(surprisal_folder)
    assert isinstance(own_model, SurprisalGPT2LMHeadModel)  # the local class, though the folder has auto_map
    _, stock_logits, stock_text = _own(tiny_model_dir)
    assert not torch.allclose(own_logits, stock_logits, atol=1e-3)  # the features are on

    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    env.update(HF_HUB_OFFLINE="1", HF_MODULES_CACHE=str(tmp_path / "modules"), OMP_NUM_THREADS="1",
               TRANSFORMERS_VERBOSITY="error", TOKENIZERS_PARALLELISM="false")
    done = subprocess.run([sys.executable, "-I", "-S", "-c", CHILD, sysconfig.get_paths()["purelib"], PROMPT,
                           str(tiny_model_dir), str(surprisal_folder), str(tmp_path)],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert not result["groundup_loaded"]
    assert result["stock"]["class"] == result["stock"]["pipeline_class"] == "GPT2LMHeadModel"
    assert result["stock"]["module"].startswith("transformers.")
    assert result["surprisal"]["class"] == result["surprisal"]["pipeline_class"] == "SurprisalGPT2LMHeadModel"
    assert result["surprisal"]["module"].startswith("transformers_modules.")  # the folder's own code
    assert torch.allclose(torch.load(tmp_path / "stock.pt"), stock_logits, atol=1e-6, rtol=0)
    assert torch.allclose(torch.load(tmp_path / "surprisal.pt"), own_logits, atol=1e-6, rtol=0)
    assert result["stock"]["text"] == stock_text and result["surprisal"]["text"] == own_text
