"""Fast checks of the pretraining pieces: configs, schedule, data order, tokenized data reuse, FLOPs, bad inputs."""

from __future__ import annotations

import glob
import json

import numpy as np
import pytest

from groundup.cli import run_stage
from groundup.core.configs import parse_config
from groundup.core.errors import GroundupError
from groundup.train.pretrain import PretrainArguments, list_checkpoints, lr_at, main
from groundup.data.pretrain import DataSpec, Windows, prepare_tokens, token_byte_lengths

from .pretrain_helpers import REPO, tiny_args
from .pretrain_helpers import fresh_accelerate_state  # noqa: F401  (autouse fixtures)



def test_every_accelerate_config_loads_with_accelerates_own_loader():
    from accelerate.commands.config.config_args import load_config_from_file

    files = sorted(glob.glob(str(REPO / "accelerate_configs" / "*.yaml")))
    names = {p.rsplit("/", 1)[-1][:-5] for p in files}
    assert {"cpu_ddp", "single_gpu", "multi_gpu", "fsdp", "deepspeed_zero2", "deepspeed_zero3", "multi_node"} <= names
    for path in files:
        config = load_config_from_file(path)
        assert config.num_processes >= 1, path
        if path.endswith("fsdp.yaml"):
            assert config.fsdp_config["fsdp_version"] == 2


@pytest.mark.parametrize("preset", ["tiny", "gpt2-124m"])
def test_pretrain_recipes_parse(preset):
    (args,) = parse_config([PretrainArguments], ["--config", str(REPO / "recipes" / preset / "pretrain.yaml")])
    assert args.seq_length <= args.n_positions and args.max_steps > 0


def test_schedule_warms_up_decays_and_never_rises_past_its_end():
    (args,) = parse_config([PretrainArguments], ["--max_steps", "100", "--warmup_steps", "10",
                                                 "--learning_rate", "1.0", "--min_lr_ratio", "0.1"])
    lrs = [lr_at(s, args) for s in range(200)]
    assert lrs[0] == pytest.approx(0.1) and lrs[9] == pytest.approx(1.0)
    assert all(a >= b for a, b in zip(lrs[9:], lrs[10:]))  # monotone after warmup, also past max_steps
    assert lrs[100] == pytest.approx(0.1) and lrs[199] == pytest.approx(0.1)


def test_batch_rows_depend_only_on_the_step_not_on_the_process_split():
    tokens = np.arange(1000, dtype=np.uint16)
    windows = Windows(tokens, seq_len=16, seed=3)
    whole = windows.rows(40, 8)
    halves = np.concatenate([Windows(tokens, 16, 3).rows(40, 4), Windows(tokens, 16, 3).rows(44, 4)])
    assert (whole == halves).all()
    assert (whole[:, 1:] == whole[:, :-1] + 1).all()  # contiguous windows of seq_len + 1
    # an epoch visits every window once
    starts = windows.rows(0, windows.n_windows)[:, 0]
    assert len(set(starts.tolist())) == windows.n_windows
    with pytest.raises(GroundupError, match="fewer than seq_length"):
        Windows(tokens[:10], 16, 0)


def test_tokenized_data_is_reused_until_tokenizer_or_source_changes(world_dir, tokenizer_dir, tiny_model_dir,
                                                                     tmp_path):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    spec = DataSpec(dataset=str(world_dir), val_documents=10)
    logs = []
    first = prepare_tokens(spec, tokenizer, tmp_path / "tok", log=logs.append)
    mtime = (tmp_path / "tok" / "train.bin").stat().st_mtime_ns
    again = prepare_tokens(spec, tokenizer, tmp_path / "tok", log=logs.append)
    assert "reusing" in logs[-1] and (tmp_path / "tok" / "train.bin").stat().st_mtime_ns == mtime
    assert again.meta == first.meta and first.meta["val_documents"] == 10
    doc_id = tokenizer.convert_tokens_to_ids("<|endoftext|>")
    assert first.train.dtype == np.uint16 and int((first.train == doc_id).sum()) == first.meta["train_documents"]
    # the memmaps hold exactly the corpus, each document followed by the separator
    texts = [json.loads(line)["text"] for line in (world_dir / "corpus.jsonl").read_text().splitlines()]
    assert first.meta["train_bytes"] + first.meta["val_bytes"] == sum(len(t.encode()) for t in texts)
    # bits per byte needs bytes per token: they add up to the UTF-8 length of the text (special tokens count 0)
    lengths = token_byte_lengths(tokenizer, 512)
    ids = np.asarray(first.val, dtype=np.int64)
    plain = [i for i in ids.tolist() if i not in tokenizer.all_special_ids]
    assert int(lengths[ids].sum()) == len(tokenizer.decode(plain).encode("utf-8")) > 0
    # another source or settings -> rebuilt
    prepare_tokens(DataSpec(dataset=str(world_dir), val_documents=5), tokenizer, tmp_path / "tok", log=logs.append)
    assert "tokenized" in logs[-1]


def test_streaming_path_stores_the_same_tokens_as_the_map_path(world_dir, tokenizer_dir, tmp_path):
    """The Hub streaming code path, exercised on a local file (datasets streams local files the same way)."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    corpus = str(world_dir / "corpus.jsonl")
    mapped = prepare_tokens(DataSpec(dataset=corpus, val_documents=10), tokenizer, tmp_path / "a", log=print)
    streamed = prepare_tokens(DataSpec(dataset=corpus, val_documents=10, streaming=True), tokenizer, tmp_path / "b",
                              log=print)
    for key in ("train_documents", "val_documents"):
        assert streamed.meta[key] == mapped.meta[key]
    assert (streamed.meta["train_tokens"] + streamed.meta["val_tokens"]
            == mapped.meta["train_tokens"] + mapped.meta["val_tokens"])
    capped = prepare_tokens(DataSpec(dataset=corpus, val_documents=10, streaming=True, max_tokens=1000), tokenizer,
                            tmp_path / "c", log=print)
    assert capped.meta["train_tokens"] == len(capped.train) == 1000


def test_a_small_source_is_mixed_into_a_streamed_one_with_repeats(world_dir, tokenizer_dir, tmp_path):
    """The gpt2-124m layout, offline: a streamed 'web' source capped by max_tokens, plus the world mixed in twice."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    web = tmp_path / "web.jsonl"
    web.write_text("".join(json.dumps({"body": f"Plain web text number {i}, about nothing in particular."}) + "\n"
                           for i in range(300)))
    spec = dict(dataset=str(web), text_column="body", streaming=True, max_tokens=2000, val_documents=10)
    plain = prepare_tokens(DataSpec(**spec), tokenizer, tmp_path / "plain", log=print)
    mixed = prepare_tokens(DataSpec(**spec, mix_dataset=str(world_dir), mix_repeats=2), tokenizer, tmp_path / "mixed",
                           log=print)
    world = prepare_tokens(DataSpec(dataset=str(world_dir), val_documents=0), tokenizer, tmp_path / "world", log=print)
    assert plain.meta["train_tokens"] == 2000  # the cap applies to the main source only
    assert mixed.meta["mix_tokens"] == 2 * world.meta["train_tokens"]
    assert mixed.meta["train_tokens"] == len(mixed.train) == 2000 + mixed.meta["mix_tokens"]
    assert np.array_equal(mixed.train[:2000], plain.train) and np.array_equal(mixed.val, plain.val)
    one_copy = world.meta["train_tokens"]
    first, second = mixed.train[2000:2000 + one_copy], mixed.train[2000 + one_copy:]
    assert sorted(first.tolist()) == sorted(world.train.tolist()) == sorted(second.tolist())
    assert not np.array_equal(first, second)  # each copy in its own document order
    # the mix source is part of the fingerprint: another repeat count re-tokenizes
    logs = []
    prepare_tokens(DataSpec(**spec, mix_dataset=str(world_dir), mix_repeats=1), tokenizer, tmp_path / "mixed",
                   log=logs.append)
    assert "tokenized" in logs[-1]
    with pytest.raises(GroundupError, match="mix_repeats"):
        prepare_tokens(DataSpec(**spec, mix_dataset=str(world_dir), mix_repeats=0), tokenizer, tmp_path / "bad",
                       log=print)


def test_incomplete_checkpoints_are_never_listed(tmp_path):
    (tmp_path / ".tmp-checkpoint-0000030").mkdir()  # a save that crashed midway
    (tmp_path / "checkpoint-0000020").mkdir()  # no state file: incomplete
    for step in (10, 5):
        (tmp_path / f"checkpoint-{step:07d}").mkdir()
        (tmp_path / f"checkpoint-{step:07d}" / "groundup_state.json").write_text("{}")
    assert [p.name for p in list_checkpoints(tmp_path)] == ["checkpoint-0000005", "checkpoint-0000010"]


def test_flops_and_vocab_rounding(tokenizer_dir):
    from transformers import AutoTokenizer

    from groundup.models.gpt2 import build_config, build_model, count_params, flops_per_token, peak_flops

    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    config = build_config(tokenizer, n_layer=2, n_embd=32, n_head=2, n_positions=64)
    assert config.vocab_size % 64 == 0 and config.vocab_size >= len(tokenizer) > config.vocab_size - 64
    assert config.bos_token_id == tokenizer.convert_tokens_to_ids("<|endoftext|>")
    model = build_model(config)
    n_matmul = count_params(model) - config.n_positions * config.n_embd  # position embeddings are looked up
    assert flops_per_token(config, 64) == 6 * n_matmul + 12 * 2 * 32 * 64
    assert peak_flops("NVIDIA H100 80GB HBM3") == 989e12 and peak_flops("NVIDIA GH200 480GB") == 989e12
    assert peak_flops(None) is None and peak_flops(None, 100) == 100e12


def _one_error_line(capsys, argv) -> str:
    assert run_stage(main, argv) == 2
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("error: ")]  # (progress bars may precede it)
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def test_bad_inputs_give_one_clear_line_each(world_dir, tokenizer_dir, tmp_path, capsys):
    out = tmp_path / "base"
    line = _one_error_line(capsys, tiny_args(world_dir, tokenizer_dir, out, seq_length=128, n_positions=64))
    assert "seq_length=128" in line and "n_positions=64" in line

    line = _one_error_line(capsys, tiny_args(world_dir, tokenizer_dir, out, vocab_size=256))
    assert "vocab" in line and "256" in line

    empty = tmp_path / "empty.jsonl"
    empty.write_text('{"text": ""}\n{"text": "   "}\n')
    line = _one_error_line(capsys, tiny_args(empty, tokenizer_dir, out))
    assert "empty" in line and "empty.jsonl" in line

    line = _one_error_line(capsys, tiny_args(world_dir, tmp_path / "no-such-tokenizer", out))
    assert "no-such-tokenizer" in line

    out.mkdir()
    (out / "something").write_text("x")
    line = _one_error_line(capsys, tiny_args(world_dir, tokenizer_dir, out))
    assert "not empty" in line and "--overwrite" in line

    line = _one_error_line(capsys, tiny_args(world_dir, tokenizer_dir, tmp_path / "b", resume=tmp_path))
    assert "not a complete checkpoint" in line

    line = _one_error_line(capsys, ["--no_such_key", "1"])
    assert "no_such_key" in line
