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


def _sft_with_push(model_dir, world_dir, out, endpoint, token):
    env = {k: v for k, v in os.environ.items() if not k.startswith("HF_")}
    env.update({"HF_ENDPOINT": endpoint, "HF_HOME": str(out.parent / "hf_home"), "HF_HUB_DISABLE_XET": "1",
                "OMP_NUM_THREADS": "1"})
    if token:
        env["HF_TOKEN"] = token
    argv = ["--model_name_or_path", str(model_dir), "--dataset_name", str(world_dir), "--output_dir", str(out),
            "--max_steps", "2", "--max_length", "128", "--per_device_train_batch_size", "8", "--report_to", "none",
            "--save_strategy", "no", "--dataloader_pin_memory", "false", "--push_to_hub", "true",
            "--hub_model_id", "alice/tiny-sft", "--hub_private_repo", "true"]
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
