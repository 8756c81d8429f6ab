import json
import subprocess

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from groundup.core.chat import CHAT_TEMPLATE, REFUSAL, TURN_END, render_chat
from groundup.core.errors import GroundupError
from groundup.train.tokenizer import STATS_FILE, main

from .conftest import PYTHON


@pytest.fixture(scope="module")
def tokenizer(tokenizer_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tokenizer_dir)


@settings(max_examples=300, deadline=None)
@given(text=st.text(max_size=200))
def test_byte_level_round_trip_is_lossless_on_arbitrary_unicode(tokenizer, text):
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    assert tokenizer.decode(ids) == text
    assert tokenizer.unk_token_id not in ids if tokenizer.unk_token_id is not None else True


def test_folder_has_chat_template_special_tokens_and_no_token_type_ids(tokenizer, tokenizer_dir):
    assert tokenizer.chat_template == CHAT_TEMPLATE
    assert tokenizer.eos_token == TURN_END and tokenizer.pad_token_id is not None
    assert "token_type_ids" not in tokenizer("hello")
    for token in ("<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|pad|>"):
        assert len(tokenizer(token, add_special_tokens=False)["input_ids"]) == 1, token
    stats = json.loads((tokenizer_dir / STATS_FILE).read_text())
    assert stats["vocab_size"] == len(tokenizer) <= stats["target_vocab_size"]
    assert stats["heldout_bytes_per_token"] > 1.5  # BPE compresses; bytes would be 1.0


def test_chat_template_renders_and_assistant_mask_is_exactly_content_plus_end_of_turn(tokenizer):
    messages = [{"role": "system", "content": "Be honest."},
                {"role": "user", "content": "In which city was Arbel Cornwood born?"},
                {"role": "assistant", "content": "Arbel Cornwood was born in the city of Velmora."},
                {"role": "user", "content": "And his hobby?"},
                {"role": "assistant", "content": REFUSAL}]
    assert tokenizer.apply_chat_template(messages, tokenize=False) == render_chat(messages)
    assert tokenizer.apply_chat_template(messages[:2], tokenize=False, add_generation_prompt=True) == \
        render_chat(messages[:2], add_generation_prompt=True)
    out = tokenizer.apply_chat_template(messages, tokenize=True, return_dict=True, return_assistant_tokens_mask=True)
    ids, mask = out["input_ids"], out["assistant_masks"]
    masked = [i for i, m in zip(ids, mask) if m]
    expected = []
    for message in messages:
        if message["role"] == "assistant":
            expected += tokenizer(message["content"] + TURN_END, add_special_tokens=False)["input_ids"]
    assert masked == expected
    # the masked spans are contiguous runs that each end with end-of-turn
    runs = "".join(map(str, mask)).split("0")
    assert [len(r) for r in runs if r] == [len(tokenizer(m["content"] + TURN_END, add_special_tokens=False)
                                           ["input_ids"]) for m in messages if m["role"] == "assistant"]


def test_reload_in_a_fresh_process_gives_identical_ids(tokenizer, tokenizer_dir):
    text = "Arbel Cornwood was born in the city of Velmora. Ünïcödé ✓ 漢字 🙂"
    messages = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": REFUSAL}]
    code = ("import json, sys\nfrom transformers import AutoTokenizer\n"
            f"t = AutoTokenizer.from_pretrained({str(tokenizer_dir)!r})\n"
            f"print(json.dumps([t({text!r})['input_ids'], t.apply_chat_template({messages!r}, tokenize=True, return_dict=True)['input_ids']]))\n")
    out = subprocess.run([PYTHON, "-c", code], capture_output=True, text=True, check=True)
    ids, chat_ids = json.loads(out.stdout.strip().splitlines()[-1])
    assert ids == tokenizer(text)["input_ids"]
    assert chat_ids == tokenizer.apply_chat_template(messages, tokenize=True, return_dict=True)["input_ids"]


def test_chat_and_refusal_text_gets_merges_of_its_own(tokenizer):
    # trained on the chat turns too, the refusal is a few tokens, not one per character
    assert len(tokenizer(REFUSAL, add_special_tokens=False)["input_ids"]) <= 5
    assert len(tokenizer("assistant", add_special_tokens=False)["input_ids"]) == 1


@pytest.mark.parametrize("kind", ["txt", "jsonl", "parquet", "hub_layout"])
def test_trains_on_local_files_and_hub_style_folders(tmp_path, kind, capsys):
    import datasets

    docs = [f"Document number {i} talks about tokenizers and bytes." for i in range(300)]
    if kind == "txt":
        source = tmp_path / "corpus.txt"
        source.write_text("\n".join(docs) + "\n")
    elif kind == "jsonl":
        source = tmp_path / "corpus.jsonl"
        source.write_text("".join(json.dumps({"body": d}) + "\n" for d in docs))
    elif kind == "parquet":
        source = tmp_path / "corpus.parquet"
        datasets.Dataset.from_dict({"body": docs}).to_parquet(str(source))
    else:  # what a Hub dataset repository looks like, loaded through the same load_dataset call as a Hub id
        source = tmp_path / "repo"
        (source / "data").mkdir(parents=True)
        datasets.Dataset.from_dict({"body": docs}).to_parquet(str(source / "data" / "train-00000-of-00001.parquet"))
    column = "text" if kind == "txt" else "body"
    streaming = ["--streaming", "true"] if kind == "hub_layout" else []
    main(["--dataset", str(source), "--text_column", column, "--output_dir", str(tmp_path / "tok"),
          "--vocab_size", "400", "--heldout_documents", "10", *streaming])
    printed = capsys.readouterr().out
    assert "vocab size" in printed and "MB/s" in printed and "bytes/token" in printed
    stats = json.loads((tmp_path / "tok" / STATS_FILE).read_text())
    assert stats["train_documents"] >= 290 and stats["vocab_size"] <= 400


def _write(path, text):
    path.write_text(text)
    return path


@pytest.mark.parametrize("case, culprit", [
    ("empty", "no non-empty text in column 'text'"),
    ("small_vocab", "vocab_size=100"),
    ("missing_column", "no text column 'content'"),
    ("unknown_key", "unknown config key.*vocab_sise"),
    ("missing_file", "no such file"),
])
def test_bad_input_gives_one_clear_line_and_leaves_the_output_alone(tmp_path, case, culprit):
    out = tmp_path / "tok"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    corpus = _write(tmp_path / "c.jsonl", "".join(json.dumps({"text": f"doc {i}"}) + "\n" for i in range(50)))
    argv = ["--output_dir", str(out), "--overwrite", "true", "--heldout_documents", "0", "--dataset", str(corpus)]
    if case == "empty":
        argv[-1] = str(_write(tmp_path / "e.jsonl", json.dumps({"text": "  "}) + "\n"))
    elif case == "small_vocab":
        argv += ["--vocab_size", "100"]
    elif case == "missing_column":
        argv += ["--text_column", "content"]
    elif case == "unknown_key":
        argv += ["--config", str(_write(tmp_path / "bad.yaml", "vocab_sise: 300\n"))]
    elif case == "missing_file":
        argv[-1] = str(tmp_path / "nope.jsonl")
    with pytest.raises(GroundupError, match=culprit) as err:
        main(argv)
    assert "\n" not in str(err.value)
    assert [p.name for p in out.iterdir()] == ["keep.txt"]


def test_cli_prints_the_error_as_one_line_and_exits_2(tmp_path):
    out = tmp_path / "tok"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    (tmp_path / "text.txt").write_text("some text\n")
    result = subprocess.run([PYTHON, "-m", "groundup.cli", "tokenizer", "--output_dir", str(out), "--dataset",
                             str(tmp_path / "text.txt")], capture_output=True, text=True)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [f"error: output folder {out} is not empty; pass --overwrite true "
                                                  "to replace it"]
