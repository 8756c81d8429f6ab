import os
import subprocess

import pytest

from .conftest import PYTHON
from .hub_stub import HubStub

FAKE_TOKEN = "hf_groundupFakeToken123456789"


def _push(folder, repo_id, endpoint, token, *extra):
    env = {k: v for k, v in os.environ.items() if not k.startswith("HF_")}
    env.update({"HF_ENDPOINT": endpoint, "HF_HOME": str(folder.parent / "hf_home"), "HF_HUB_DISABLE_XET": "1"})
    if token:
        env["HF_TOKEN"] = token
    return subprocess.run([PYTHON, "-m", "groundup.cli", "push", str(folder), "--repo-id", repo_id, *extra],
                          capture_output=True, text=True, env=env, timeout=120)


def test_push_uploads_every_file_to_the_hub_api_and_never_prints_the_token(tiny_model_dir):
    with HubStub() as hub:
        result = _push(tiny_model_dir, "alice/tiny-honest", hub.url, FAKE_TOKEN, "--private")
    assert result.returncode == 0, result.stderr
    assert FAKE_TOKEN not in result.stdout + result.stderr
    assert hub.repos["alice/tiny-honest"]["visibility"] == "private"
    uploaded = hub.files["alice/tiny-honest"]
    local = {p.name: p.read_bytes() for p in tiny_model_dir.iterdir() if p.is_file()}
    assert uploaded == local
    assert all(h == f"Bearer {FAKE_TOKEN}" for h in hub.auth_headers)


def test_push_without_token_fails_with_one_line_and_changes_nothing(tiny_model_dir):
    before = {p.name: p.stat().st_mtime_ns for p in tiny_model_dir.iterdir()}
    with HubStub() as hub:
        result = _push(tiny_model_dir, "alice/tiny-honest", hub.url, None)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == ["error: push: no Hugging Face token found; set HF_TOKEN or run "
                                                  "`hf auth login`"]
    assert not hub.repos
    assert before == {p.name: p.stat().st_mtime_ns for p in tiny_model_dir.iterdir()}


def test_push_with_no_network_fails_with_one_line(tiny_model_dir):
    result = _push(tiny_model_dir, "alice/tiny-honest", "http://127.0.0.1:9", FAKE_TOKEN)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: push to alice/tiny-honest failed")
    assert FAKE_TOKEN not in result.stderr


@pytest.mark.parametrize("target, repo, message", [("missing", "a/b", "is not a folder"),
                                                   ("empty", "a/b", "no config.json"),
                                                   ("model", "noslash", "USER/NAME")])
def test_push_rejects_bad_input(tmp_path, tiny_model_dir, target, repo, message):
    folder = {"missing": tmp_path / "nope", "empty": tmp_path, "model": tiny_model_dir}[target]
    result = _push(folder, repo, "http://127.0.0.1:9", FAKE_TOKEN)
    assert result.returncode == 2 and message in result.stderr


def _sft_with_push(model_dir, world_dir, out, endpoint, token, *extra):
    env = {k: v for k, v in os.environ.items() if not k.startswith("HF_")}
    env.update({"HF_ENDPOINT": endpoint, "HF_HOME": str(out.parent / "hf_home"), "HF_HUB_DISABLE_XET": "1",
                "OMP_NUM_THREADS": "1"})
    if token:
        env["HF_TOKEN"] = token
    argv = ["--model_name_or_path", str(model_dir), "--dataset_name", str(world_dir), "--output_dir", str(out),
            "--max_steps", "2", "--max_length", "128", "--per_device_train_batch_size", "8", "--report_to", "none",
            "--save_strategy", "no", "--dataloader_pin_memory", "false", "--push_to_hub", "true",
            "--hub_model_id", "alice/tiny-sft", "--hub_private_repo", "true", *extra]
    return subprocess.run([PYTHON, "-m", "groundup.cli", "sft", *argv], capture_output=True, text=True, env=env,
                          timeout=300)


def test_push_to_hub_in_a_stage_yaml_uploads_the_finished_folder(tiny_model_dir, world_dir, tmp_path):
    out = tmp_path / "sft"
    with HubStub() as hub:
        result = _sft_with_push(tiny_model_dir, world_dir, out, hub.url, FAKE_TOKEN)
    assert result.returncode == 0, result.stderr[-2000:]
    assert FAKE_TOKEN not in result.stdout + result.stderr
    uploaded = hub.files["alice/tiny-sft"]
    local = {str(p.relative_to(out)): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    assert uploaded == local and "model.safetensors" in uploaded
    assert hub.repos["alice/tiny-sft"]["visibility"] == "private"
    assert hub.validated_cards  # the card's metadata went through the Hub's validation


def test_push_to_hub_without_token_keeps_the_trained_folder(tiny_model_dir, world_dir, tmp_path):
    out = tmp_path / "sft"
    result = _sft_with_push(tiny_model_dir, world_dir, out, "http://127.0.0.1:9", None)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1].startswith("error: push: no Hugging Face token found")
    assert (out / "model.safetensors").is_file() and (out / "recipe.yaml").is_file()


# ------------------------------------------------------------------------------------------------------------------
# What travels names the base by its Hub id, never by a local path


def _card_metadata(path):
    import yaml

    text = path.read_text()
    return yaml.safe_load(text.split("---")[1]), text


def test_lora_sft_from_a_base_with_a_recorded_hub_id_names_it_in_adapter_and_cards(tiny_model_dir, world_dir,
                                                                                     tmp_path):
    import json
    import shutil

    base = tmp_path / "base"
    shutil.copytree(tiny_model_dir, base)
    (base / "recipe.yaml").write_text("output_dir: runs/x/base\nhub_model_id: alice/tiny-base\n")
    out = tmp_path / "sft"
    with HubStub() as hub:
        result = _sft_with_push(base, world_dir, out, hub.url, FAKE_TOKEN, "--use_peft", "true", "--lora_r", "4",
                                "--lora_alpha", "8")
    assert result.returncode == 0, result.stderr[-2000:]
    assert "note:" not in result.stdout  # nothing local left to fix
    uploaded = hub.files["alice/tiny-sft"]
    adapter_config = json.loads(uploaded["adapter/adapter_config.json"])
    assert adapter_config["base_model_name_or_path"] == "alice/tiny-base"
    for prefix in ("", "adapter/"):  # tokenizer configs that transformers 4.x loads too (core/portable.py)
        tokenizer_config = json.loads(uploaded[f"{prefix}tokenizer_config.json"])
        assert tokenizer_config["tokenizer_class"] == "PreTrainedTokenizerFast"
        assert tokenizer_config["model_max_length"] == 128 and "is_local" not in tokenizer_config

    meta, text = _card_metadata(out / "README.md")
    assert meta["base_model"] == "alice/tiny-base" and meta["library_name"] == "transformers"
    assert 'pipeline("text-generation", "alice/tiny-sft")' in text  # the usage snippet loads the Hub id
    meta, text = _card_metadata(out / "adapter" / "README.md")  # ours, not peft's template naming the local base
    assert meta["library_name"] == "peft" and meta["base_model"] == "alice/tiny-base"
    assert {"peft", "lora", "base_model:adapter:alice/tiny-base"} <= set(meta["tags"])
    assert 'PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base), "alice/tiny-sft", ' \
           'subfolder="adapter")' in text
    for name, content in uploaded.items():  # no path of this machine in the configs and the cards' metadata
        # (the cards' "Reproduce" and "Resolved config" sections show the paths this test gave the stage)
        text = content.decode() if name.endswith((".json", ".md")) else ""
        assert str(tmp_path) not in (text.split("---")[1] if name.endswith(".md") else text), name


def test_adapter_from_a_local_base_without_hub_id_keeps_it_loadable_and_the_card_says_how_to_set_it(tmp_path):
    """merge: false makes the folder itself the adapter: its card is a peft card; the local base stays (the adapter
    must load where it was trained), the card explains, and a push says what to fix."""
    import json

    from groundup.core.model_card import write_model_card
    from groundup.core.provenance import base_hub_id, local_adapter_bases

    base = tmp_path / "runs" / "tiny" / "base"
    base.mkdir(parents=True)
    (base / "recipe.yaml").write_text("hub_model_id: null\n")
    assert base_hub_id(str(base)) is None and base_hub_id("alice/tiny-base") == "alice/tiny-base"
    folder = tmp_path / "sft"
    folder.mkdir()
    (folder / "adapter_config.json").write_text(json.dumps({"base_model_name_or_path": str(base)}))
    write_model_card(folder, title="t", summary="s", base_model=str(base), datasets=[str(tmp_path)], adapter=True,
                     name=str(folder))
    meta, text = _card_metadata(folder / "README.md")
    assert meta["library_name"] == "peft" and "base_model" not in meta and "datasets" not in meta
    assert not any(t.startswith("base_model:") for t in meta["tags"])
    assert "## Base model" in text and f"groundup push {base} --repo-id USER/NAME" in text
    assert "base_model_name_or_path" in text and "AutoPeftModelForCausalLM" in text
    assert 'pipeline("text-generation"' not in text
    assert local_adapter_bases(folder) == {"adapter_config.json": str(base)}


def test_push_of_an_adapter_with_a_local_base_prints_what_to_fix(tiny_model_dir, tmp_path):
    import json
    import shutil

    folder = tmp_path / "sft"
    shutil.copytree(tiny_model_dir, folder)
    (folder / "adapter").mkdir()
    (folder / "adapter" / "adapter_config.json").write_text(json.dumps({"base_model_name_or_path": "runs/tiny/base"}))
    with HubStub() as hub:
        result = _push(folder, "alice/tiny-honest", hub.url, FAKE_TOKEN)
    assert result.returncode == 0, result.stderr
    assert "note: adapter/adapter_config.json names its base model by the local path runs/tiny/base" in result.stdout
