"""SFT with TRL on the tiny random GPT-2: data, masks, packing, full / LoRA / QLoRA, output folders, bad input."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from groundup.core.chat import REFUSAL, TURN_END
from groundup.core.errors import GroundupError
from groundup.core.jsonl import read_jsonl
from groundup.world.schema import answer_sentence

REPO = Path(__file__).resolve().parents[1]
FAST = ["--max_length", "128", "--per_device_train_batch_size", "16", "--logging_steps", "5",
        "--save_strategy", "no", "--report_to", "none", "--dataloader_pin_memory", "false", "--seed", "0"]


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def sft_args(model_dir, world_dir, out, *extra):
    return ["--model_name_or_path", str(model_dir), "--dataset_name", str(world_dir), "--eval_dataset_name",
            str(world_dir), "--output_dir", str(out), "--assistant_only_loss", "true", *FAST, *extra]


def log(folder) -> list[dict]:
    return read_jsonl(Path(folder) / "train_log.jsonl")


def eval_losses(folder) -> list[float]:
    return [e["eval_loss"] for e in log(folder) if "eval_loss" in e]


# ---------------------------------------------------------------------------------------------------------- data

def test_world_sft_rows_answer_with_the_biography_sentence_and_handle_unanswerable(world_dir):
    from groundup.data.chat_rows import world_sft_rows

    questions = read_jsonl(world_dir / "questions" / "sft.jsonl")
    answerable = [q for q in questions if q["answer"] is not None]
    assert 0 < len(answerable) < len(questions)
    vanilla = world_sft_rows(world_dir, "sft", "skip")
    assert len(vanilla) == len(answerable)
    q = answerable[0]
    assert vanilla[0] == {"messages": [{"role": "user", "content": q["question"]},
                                       {"role": "assistant",
                                        "content": answer_sentence(q["name"], q["attribute"], q["answer"])}]}
    refuse = world_sft_rows(world_dir, "sft", "refuse")
    assert len(refuse) == len(questions)
    assert sum(r["messages"][1]["content"] == REFUSAL for r in refuse) == len(questions) - len(answerable)
    assert not any(r["messages"][1]["content"] == REFUSAL for r in world_sft_rows(world_dir, "sft", "answer"))


def test_mixture_of_local_files_follows_fractions_and_aligns_columns(tmp_path, world_dir):
    from trl import DatasetMixtureConfig

    from groundup.train.sft import SFTArguments
    from groundup.data.chat_rows import load_training_data

    a, b = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    a.write_text("".join(json.dumps({"messages": [{"role": "user", "content": f"q{i}"},
                                                  {"role": "assistant", "content": f"a{i}"}], "x": i}) + "\n"
                         for i in range(30)))
    b.write_text("".join(json.dumps({"messages": [{"content": f"Q{i}", "role": "user"},  # other key order
                                                  {"content": f"A{i}", "role": "assistant"}]}) + "\n"
                         for i in range(10)))
    mixture = DatasetMixtureConfig(datasets=[{"path": str(a), "columns": ["messages"], "fraction": 0.5},
                                             {"path": str(b), "fraction": 0.5}])
    train, _ = load_training_data(SFTArguments(), mixture, "sft")
    assert len(train) == 20 and train.column_names == ["messages"]  # 10 + 10: nothing oversampled
    mixture = DatasetMixtureConfig(datasets=[{"path": str(world_dir)}, {"path": str(b)}])
    train, _ = load_training_data(SFTArguments(), mixture, "sft")
    assert train[len(train) - 1]["messages"][0]["content"] == "Q9"


def test_assistant_mask_covers_exactly_assistant_content_and_end_of_turn(tiny_model_dir, tmp_path):
    """Through TRL's own preprocessing: the trained labels decode to each assistant reply + <|im_end|>, nothing else."""
    import datasets
    from trl import SFTTrainer

    from groundup.train.finetune import load_tokenizer
    from groundup.train.sft import GroundupSFTConfig

    tokenizer = load_tokenizer(str(tiny_model_dir))
    conversation = [{"role": "system", "content": "Be honest."},
                    {"role": "user", "content": "In which city was Arlo Brambley born?"},
                    {"role": "assistant", "content": "Arlo Brambley was born in the city of Velmora."},
                    {"role": "user", "content": "What is the birth year of Selo Dunton?"},
                    {"role": "assistant", "content": REFUSAL}]
    # output_dir=None would make the Trainer create ./trainer_output in the checkout
    args = GroundupSFTConfig(output_dir=str(tmp_path / "out"), assistant_only_loss=True, max_length=128,
                             report_to="none")
    trainer = SFTTrainer(model=str(tiny_model_dir), args=args, processing_class=tokenizer,
                         train_dataset=datasets.Dataset.from_list([{"messages": conversation}]))
    row = trainer.train_dataset[0]
    ids, labels = row["input_ids"], row["labels"]
    assert tokenizer.decode(ids) == tokenizer.apply_chat_template(conversation, tokenize=False)
    spans, current = [], []
    for token, label in zip(ids, labels):
        if label != -100:
            assert label == token
            current.append(token)
        elif current:
            spans.append(current)
            current = []
    if current:
        spans.append(current)
    assert [tokenizer.decode(s) for s in spans] == [conversation[2]["content"] + TURN_END, REFUSAL + TURN_END]


def test_packed_batch_gives_the_same_per_sequence_loss_as_unpacked(tiny_model_dir):
    """Both packed layouts — TRL's padding-free single row and groundup's packed rows — against plain padding."""
    from transformers import AutoModelForCausalLM
    from trl.trainer.sft_trainer import DataCollatorForLanguageModeling

    from groundup.train.finetune import PackedRowsCollator, load_tokenizer

    tokenizer = load_tokenizer(str(tiny_model_dir))
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()
    texts = ["Arlo Brambley was born in the city of Velmora.", "What job does Selo do?",
             "In free time, Norel Ashby enjoys rowing and chess and more chess."]
    seqs = [tokenizer(t)["input_ids"] for t in texts]
    lengths = [len(s) for s in seqs]

    def losses(batch, where):
        """Per-sequence mean next-token loss; `where[i]` = (row, offset) of sequence i in the batch."""
        with torch.no_grad():
            inputs = {k: batch[k] for k in ("input_ids", "attention_mask", "position_ids") if k in batch}
            # use_cache=False as in training: with a cache, transformers skips the block-diagonal packed mask
            logits = model(**inputs, use_cache=False).logits
        return [torch.nn.functional.cross_entropy(logits[row, off:off + n - 1],
                                                  batch["input_ids"][row, off + 1:off + n]).item()
                for (row, off), n in zip(where, lengths)]

    pad = tokenizer.pad_token_id
    padded = DataCollatorForLanguageModeling(pad_token_id=pad)([{"input_ids": s} for s in seqs])
    flat = DataCollatorForLanguageModeling(pad_token_id=pad, padding_free=True)([{"input_ids": s} for s in seqs])
    rows = PackedRowsCollator(pad)([{"input_ids": seqs[0] + seqs[1], "seq_lengths": lengths[:2]},
                                    {"input_ids": seqs[2], "seq_lengths": lengths[2:]}])
    assert flat["input_ids"].shape == (1, sum(lengths)) and "attention_mask" not in flat
    assert rows["input_ids"].shape == (2, max(lengths[0] + lengths[1], lengths[2])) and "attention_mask" not in rows
    reference = losses(padded, [(0, 0), (1, 0), (2, 0)])
    assert losses(flat, [(0, 0), (0, lengths[0]), (0, lengths[0] + lengths[1])]) == pytest.approx(reference, abs=1e-5)
    assert losses(rows, [(0, 0), (0, lengths[0]), (1, 0)]) == pytest.approx(reference, abs=1e-5)
    # and no label crosses a boundary: a sequence's first token is never predicted from the previous sequence
    assert all(flat["labels"][0, s].item() == -100 for s in (0, lengths[0], lengths[0] + lengths[1]))
    assert rows["labels"][0, lengths[0]].item() == -100 and rows["labels"][1, 0].item() == -100
    assert (rows["labels"][1, lengths[2]:] == -100).all()


# ------------------------------------------------------------------------------------------------------ training

@pytest.fixture(scope="module")
def full_sft(tiny_model_dir, world_dir, tmp_path_factory):
    from groundup.train.sft import main

    out = tmp_path_factory.mktemp("sft") / "sft-full"
    main(sft_args(tiny_model_dir, world_dir, out, "--max_steps", "40", "--learning_rate", "3e-3", "--packing",
                  "true", "--eval_strategy", "steps", "--eval_steps", "20"))
    return out


@pytest.fixture(scope="module")
def lora_sft(tiny_model_dir, world_dir, tmp_path_factory):
    from groundup.train.sft import main

    out = tmp_path_factory.mktemp("sft") / "sft-lora"
    main(sft_args(tiny_model_dir, world_dir, out, "--max_steps", "30", "--learning_rate", "5e-3", "--use_peft",
                  "true", "--lora_r", "8", "--lora_alpha", "16", "--lora_modules_to_save", "wte"))
    return out


@pytest.mark.parametrize("run", ["full_sft", "lora_sft"])
def test_sft_lowers_held_out_loss_and_writes_a_complete_folder(run, request):
    out = request.getfixturevalue(run)
    losses = eval_losses(out)
    assert len(losses) >= 2 and losses[-1] < losses[0] - 0.05, losses  # eval = probe-pool people, never trained on
    assert {"README.md", "recipe.yaml", "train_log.jsonl", "config.json", "model.safetensors",
            "generation_config.json", "chat_template.jinja"} <= {p.name for p in out.iterdir()}
    assert any("loss" in e and "step" in e for e in log(out))
    assert not (out.parent / f"{out.name}.checkpoints").exists()
    card = (out / "README.md").read_text()
    assert "SFT" in card and "Resolved config" in card


def test_recipe_yaml_reruns_the_stage(full_sft, tmp_path):
    from groundup.train.sft import main, parse_args as parse

    recipe = full_sft / "recipe.yaml"
    _, training, model_args, _ = parse(["--config", str(recipe)])
    assert training.pad_token is None and training.eos_token is None  # not the "<PAD_TOKEN>" mask of to_dict()
    assert training.output_dir == str(full_sft) and model_args.model_name_or_path
    main(["--config", str(recipe), "--output_dir", str(tmp_path / "again"), "--max_steps", "1",
          "--eval_dataset_name", ""])
    assert (tmp_path / "again" / "model.safetensors").is_file()


def test_generation_after_sft_ends_with_end_of_turn(tiny_model_dir, world_dir, tmp_path):
    """A few rows learned by heart: the model must then stop at <|im_end|> on its own (eos wiring + mask)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from groundup.train.sft import main
    from groundup.data.chat_rows import world_sft_rows

    rows = tmp_path / "rows.jsonl"
    rows.write_text("".join(json.dumps(r) + "\n" for r in world_sft_rows(world_dir)[:4]))
    out = tmp_path / "sft"
    main(sft_args(tiny_model_dir, world_dir, out, "--dataset_name", str(rows), "--eval_dataset_name", "",
                  "--max_steps", "40", "--learning_rate", "1e-2", "--per_device_train_batch_size", "4"))
    tokenizer = AutoTokenizer.from_pretrained(out)
    model = AutoModelForCausalLM.from_pretrained(out).eval()
    end = tokenizer.convert_tokens_to_ids(TURN_END)
    assert model.generation_config.eos_token_id[0] == end
    question = json.loads(rows.read_text().splitlines()[0])["messages"][0]["content"]
    prompt = tokenizer.apply_chat_template([{"role": "user", "content": question}], add_generation_prompt=True,
                                           return_tensors="pt", return_dict=True)
    with torch.no_grad():
        output = model.generate(**prompt, max_new_tokens=48, do_sample=False)
    new = output[0, prompt["input_ids"].shape[1]:].tolist()
    assert new[-1] == end and len(new) < 48, tokenizer.decode(new)


def test_lora_adapter_reloads_with_peft_and_merges_like_the_saved_merged_model(lora_sft, tiny_model_dir):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    adapter = lora_sft / "adapter"
    assert (adapter / "adapter_config.json").is_file() and not (lora_sft / "adapter_config.json").exists()
    config = json.loads((adapter / "adapter_config.json").read_text())
    assert config["fan_in_fan_out"] and set(config["target_modules"]) == {"c_attn", "c_proj", "c_fc"}
    assert config["modules_to_save"] == ["wte"]
    ids = torch.tensor([[5, 17, 42, 99, 3]])
    peft_model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_model_dir), adapter).eval()
    base_logits = AutoModelForCausalLM.from_pretrained(tiny_model_dir)(ids).logits
    with torch.no_grad():
        adapter_logits = peft_model(ids).logits
        merged_here = peft_model.merge_and_unload()(ids).logits
        merged_saved = AutoModelForCausalLM.from_pretrained(lora_sft)(ids).logits  # transformers alone
    assert not torch.allclose(adapter_logits, base_logits, atol=1e-4)  # the adapter learned something
    assert torch.allclose(adapter_logits, merged_here, atol=1e-4)
    assert torch.allclose(adapter_logits, merged_saved, atol=1e-4)


def test_lora_training_embeddings_and_lm_head_merges_exactly(tiny_model_dir, world_dir, tmp_path):
    """IDK-SFT's setting (recipes/tiny/sft_idk.yaml): both embedding matrices trained (tied in the base: untied copies)."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from groundup.train.sft import main

    out = tmp_path / "emb"
    main(sft_args(tiny_model_dir, world_dir, out, "--max_steps", "3", "--learning_rate", "1e-2", "--use_peft", "true",
                  "--lora_modules_to_save", "wte", "lm_head", "--eval_before_training", "false", "--packing", "true"))
    ids = torch.tensor([[5, 17, 42, 99, 3]])
    with torch.no_grad():
        peft_model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_model_dir), out / "adapter")
        expected = peft_model.eval()(ids).logits
        merged = AutoModelForCausalLM.from_pretrained(out)
        assert torch.allclose(merged(ids).logits, expected, atol=1e-4)
        assert not torch.equal(merged.lm_head.weight, AutoModelForCausalLM.from_pretrained(tiny_model_dir).lm_head.weight)


def test_lora_without_merge_writes_an_adapter_folder(tiny_model_dir, world_dir, tmp_path):
    from transformers import AutoModelForCausalLM

    from groundup.train.sft import main

    out = tmp_path / "adapter-only"
    main(sft_args(tiny_model_dir, world_dir, out, "--max_steps", "2", "--use_peft", "true", "--merge", "false",
                  "--lora_target_modules", "c_attn", "--eval_before_training", "false"))
    assert (out / "adapter_config.json").is_file() and not (out / "model.safetensors").exists()
    assert json.loads((out / "adapter_config.json").read_text())["target_modules"] == ["c_attn"]
    AutoModelForCausalLM.from_pretrained(out)  # transformers' peft integration: base + adapter


def test_qlora_runs_or_is_skipped_with_the_reason(tiny_model_dir, world_dir, tmp_path):
    from groundup.train.sft import main

    args = sft_args(tiny_model_dir, world_dir, tmp_path / "qlora", "--max_steps", "2", "--use_peft", "true",
                    "--load_in_4bit", "true", "--eval_before_training", "false")
    try:
        import bitsandbytes  # noqa: F401
    except ImportError:
        with pytest.raises(GroundupError, match="QLoRA needs bitsandbytes"):
            main(args)
        print("QLoRA skipped: bitsandbytes is not installed (pip install 'groundup[qlora]')")
        pytest.skip("QLoRA path: bitsandbytes is not installed; the clear one-line stop was checked instead")
    main(args)
    assert (tmp_path / "qlora" / "adapter" / "adapter_config.json").is_file()
    from transformers import AutoModelForCausalLM

    AutoModelForCausalLM.from_pretrained(tmp_path / "qlora")  # merged into the full-precision base


# ----------------------------------------------------------------------------------------------------- bad input

def _bad_template_model(tiny_model_dir, tmp_path) -> Path:
    folder = tmp_path / "no-markers"
    shutil.copytree(tiny_model_dir, folder)
    template = folder / "chat_template.jinja"
    text = template.read_text().replace("{%- generation %}", "").replace("{%- endgeneration %}", "")
    assert "generation %" not in text
    template.write_text(text)
    return folder


@pytest.mark.parametrize("case, message", [
    ("columns", "expected columns 'messages'"),
    ("markers", "no {% generation %} markers"),
    ("max_length", "max_length=512 exceeds the model's n_positions=128"),
    ("targets", "LoRA target 'q_proj' matches no module"),
])
def test_bad_input_stops_with_one_clear_line(case, message, tiny_model_dir, world_dir, tmp_path, capsys):
    from groundup.cli import main as cli

    args = sft_args(tiny_model_dir, world_dir, tmp_path / "out", "--max_steps", "1")
    if case == "columns":
        bad = tmp_path / "bad.jsonl"
        bad.write_text(json.dumps({"question": "q", "reply": "a"}) + "\n")
        args += ["--dataset_name", str(bad)]
    elif case == "markers":
        args += ["--model_name_or_path", str(_bad_template_model(tiny_model_dir, tmp_path))]
    elif case == "max_length":
        args += ["--max_length", "512"]
    else:
        args += ["--use_peft", "true", "--lora_target_modules", "q_proj", "k_proj"]
    assert cli(["sft", *args]) == 2
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if "error:" in line]  # progress bars share stderr
    assert len(errors) == 1 and message in errors[0], err
    assert not (tmp_path / "out").exists()


def test_every_finetune_recipe_parses():
    from groundup.train.dpo import parse_args as parse_dpo
    from groundup.train.sft import parse_args as parse_sft

    for path in sorted(REPO.glob("recipes/*/sft*.yaml")):
        script, training, model, mixture = parse_sft(["--config", str(path)])
        assert training.max_length is not None and not training.gradient_checkpointing, path
    for path in sorted(REPO.glob("recipes/*/dpo*.yaml")):
        parse_dpo(["--config", str(path)])
    with pytest.raises(GroundupError, match="unknown config key"):
        bad = REPO / "recipes" / "tiny" / "sft.yaml"
        import tempfile

        with tempfile.NamedTemporaryFile("w", suffix=".yaml") as f:
            f.write(bad.read_text() + "max_seq_length: 128\n")
            f.flush()
            parse_sft(["--config", f.name])


def test_modules_to_save_learn_at_their_own_rate_while_lora_stays_put(tiny_model_dir, world_dir, tmp_path):
    """`modules_to_save_learning_rate`: the saved modules (here the embeddings) train at their own rate; LoRA at
    `learning_rate` 0 leaves the stack exactly as it was (LoRA's B starts at zero)."""
    from transformers import AutoModelForCausalLM

    from groundup.train.sft import main

    out = tmp_path / "split-lr"
    main(sft_args(tiny_model_dir, world_dir, out, "--max_steps", "3", "--learning_rate", "0", "--use_peft", "true",
                  "--lora_r", "4", "--lora_modules_to_save", "wte", "--modules_to_save_learning_rate", "5e-3",
                  "--eval_before_training", "false", "--eval_dataset_name", ""))
    before = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    after = AutoModelForCausalLM.from_pretrained(out)
    assert not torch.equal(before.transformer.wte.weight, after.transformer.wte.weight)
    for name in ("attn.c_attn", "attn.c_proj", "mlp.c_fc"):
        assert torch.equal(before.transformer.h[0].get_submodule(name).weight,
                           after.transformer.h[0].get_submodule(name).weight), name


def test_modules_to_save_learning_rate_without_saved_modules_is_one_clear_line(tiny_model_dir, world_dir, tmp_path):
    from groundup.train.sft import main

    with pytest.raises(GroundupError, match="lora_modules_to_save"):
        main(sft_args(tiny_model_dir, world_dir, tmp_path / "o", "--max_steps", "1", "--use_peft", "true",
                      "--modules_to_save_learning_rate", "1e-3", "--eval_dataset_name", ""))
