"""The surprisal-reading model: assembly, the feature it computes, save/load, generation, and LoRA training with TRL."""

from __future__ import annotations

import pytest
import torch

from groundup.core.errors import GroundupError
from groundup.models.surprisal import SurprisalGPT2LMHeadModel, assemble
from groundup.train.surprisal_init import main

pytestmark = pytest.mark.usefixtures("one_torch_thread")

QUESTIONS = ["In which city was Arel Bram born?", "What is your name?"]


@pytest.fixture(scope="module")
def assembled(tiny_model_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("surprisal") / "init"
    main(["--base", str(tiny_model_dir), "--model", str(tiny_model_dir), "--output_dir", str(out)])
    return out


def _inputs(tokenizer, texts):
    tokenizer.padding_side = "left"
    return tokenizer(texts, return_tensors="pt", padding=True)


@torch.no_grad()
def _silent_until_opened_and_saved_with_it(model, plain, batch, open_feature, path):
    """A new input adds nothing until its weights move; once they do, the output changes, and the saved folder loads
    back giving the changed output. Returns the loaded model."""
    from transformers import AutoModelForCausalLM

    mask = batch["attention_mask"].bool()
    position_ids = (batch["attention_mask"].cumsum(-1) - 1).clamp_min(0)
    expected = plain(**batch, position_ids=position_ids).logits[mask]
    assert torch.allclose(model(**batch).logits[mask], expected, atol=1e-5)
    open_feature(model.transformer)
    opened = model(**batch).logits[mask]
    model.save_pretrained(path)
    loaded = AutoModelForCausalLM.from_pretrained(path).eval()
    assert torch.allclose(loaded(**batch).logits[mask], opened, atol=1e-5)
    assert not torch.allclose(opened, expected, atol=1e-3)
    return loaded


def test_assembled_model_starts_as_the_model_it_was_built_from(tiny_model_dir):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    plain = AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()
    model = assemble(tiny_model_dir, tiny_model_dir).eval()
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    batch = _inputs(tokenizer, QUESTIONS)
    with torch.no_grad():
        mask = batch["attention_mask"].bool()
        position_ids = (batch["attention_mask"].cumsum(-1) - 1).clamp_min(0)
        expected = plain(**batch, position_ids=position_ids).logits[mask]
        assert torch.allclose(model(**batch).logits[mask], expected, atol=1e-5)
        # the feature: -log P_reference(token | prefix), 0 on the first token and on padding
        s = model.transformer.surprisal(batch["input_ids"], batch["attention_mask"], position_ids)
        logp = torch.log_softmax(plain(**batch, position_ids=position_ids).logits, -1)
        ids = batch["input_ids"]
        manual = -logp[:, :-1].gather(-1, ids[:, 1:, None])[..., 0] * batch["attention_mask"][:, 1:]
        assert torch.allclose(s[:, 1:], manual, atol=1e-4)
        assert (s[~mask] == 0).all() and (s[:, 0] == 0).all() and (s[mask] >= 0).all()


def test_folder_loads_through_the_auto_classes_and_generates_like_its_source(assembled, tiny_model_dir):
    from groundup.evaluate.generation import HFGenerator, load_model_and_tokenizer

    model, tokenizer = load_model_and_tokenizer(str(assembled))
    assert isinstance(model, SurprisalGPT2LMHeadModel)
    plain, plain_tokenizer = load_model_and_tokenizer(str(tiny_model_dir))
    ours = HFGenerator(model=model, tokenizer=tokenizer, max_new_tokens=8, progress=False).generate(QUESTIONS)
    theirs = HFGenerator(model=plain, tokenizer=plain_tokenizer, max_new_tokens=8, progress=False).generate(QUESTIONS)
    assert ours == theirs  # the feature starts at zero; generation recomputes the prefix without a cache


def test_fine_tuning_loads_its_tokenizer_without_a_model_type_warning(assembled):
    # a fresh process: in this one another test has already registered the model type
    import subprocess
    import sys

    code = f"from groundup.train.finetune import load_tokenizer; load_tokenizer({str(assembled)!r})"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "to instantiate a model of type" not in done.stderr + done.stdout


def test_a_base_of_another_shape_is_one_clear_line(tiny_model_dir, tmp_path):
    from transformers import GPT2Config, GPT2LMHeadModel

    GPT2LMHeadModel(GPT2Config(vocab_size=64, n_embd=16, n_layer=1, n_head=2, n_positions=32)).save_pretrained(
        tmp_path / "other")
    with pytest.raises(GroundupError, match="differ in shape"):
        assemble(tmp_path / "other", tiny_model_dir)
    with pytest.raises(GroundupError, match="copy_max_match"):
        main(["--base", str(tiny_model_dir), "--model", str(tiny_model_dir), "--output_dir", str(tmp_path / "o"),
              "--copy_max_match", "-1"])


def test_lora_idk_sft_trains_the_feature_and_leaves_the_reference_alone(assembled, world_dir, tmp_path):
    from transformers import AutoModelForCausalLM

    from groundup.train.sft import main as sft_main

    out = tmp_path / "trained"
    sft_main(["--model_name_or_path", str(assembled), "--dataset_name", str(world_dir), "--world_unanswerable",
              "refuse", "--output_dir", str(out), "--assistant_only_loss", "true", "--packing", "false",
              "--max_length", "128", "--per_device_train_batch_size", "16", "--max_steps", "4",
              "--learning_rate", "5e-3", "--use_peft", "true", "--lora_r", "4",
              "--lora_target_modules", r"transformer\.h\.\d+\.(attn\.c_attn|mlp\.c_fc)",
              "--lora_modules_to_save", "surprisal_embedding", "lm_head", "--save_strategy", "no",
              "--report_to", "none", "--eval_strategy", "no", "--dataloader_pin_memory", "false"])
    before = AutoModelForCausalLM.from_pretrained(assembled)
    after = AutoModelForCausalLM.from_pretrained(out)
    assert isinstance(after, SurprisalGPT2LMHeadModel)
    assert before.transformer.surprisal_embedding.weight.abs().sum() == 0
    assert after.transformer.surprisal_embedding.weight.abs().sum() > 0  # TRL's fused LM head calls the backbone
    for name, value in before.transformer.reference.state_dict().items():
        assert torch.equal(value, after.transformer.reference.state_dict()[name]), name
    assert not torch.equal(before.transformer.h[0].attn.c_attn.weight, after.transformer.h[0].attn.c_attn.weight)


def test_chat_and_inspect_load_it(assembled, tmp_path):
    from groundup.evaluate.chat_cli import load_chat_model
    from groundup.evaluate.inspection import InspectArguments, inspect_model

    _, model = load_chat_model(str(assembled))
    assert isinstance(model, SurprisalGPT2LMHeadModel)
    pictures = inspect_model(InspectArguments(model=str(assembled), prompt=QUESTIONS[0], max_new_tokens=3,
                                              output_dir=str(tmp_path / "inspect")))
    assert len(pictures) == model.config.n_layer + 1 and all(p.stat().st_size > 0 for p in pictures)


def test_lora_dpo_with_the_stack_regex_leaves_the_reference_alone(assembled, world_dir, tmp_path):
    """The tiny preset's DPO starts from the surprisal arm: LoRA trains the main stack, the frozen reference inside
    the model stays the base (through DPO's reference pass with the adapter off, too), and the merged folder keeps the
    model type."""
    from transformers import AutoModelForCausalLM

    from groundup.train.dpo import main as dpo_main

    out = tmp_path / "dpo"
    dpo_main(["--model_name_or_path", str(assembled), "--dataset_name", str(world_dir), "--output_dir", str(out),
              "--max_length", "128", "--per_device_train_batch_size", "8", "--max_steps", "3", "--learning_rate",
              "5e-3", "--use_peft", "true", "--lora_r", "4",
              "--lora_target_modules", r"transformer\.h\.\d+\.(attn\.c_attn|mlp\.c_fc)",
              "--loss_type", "sigmoid", "sft", "--loss_weights", "1.0", "1.0", "--save_strategy", "no",
              "--report_to", "none", "--eval_strategy", "no", "--dataloader_pin_memory", "false"])
    before = AutoModelForCausalLM.from_pretrained(assembled)
    after = AutoModelForCausalLM.from_pretrained(out)
    assert isinstance(after, SurprisalGPT2LMHeadModel)
    for name, value in before.transformer.reference.state_dict().items():
        assert torch.equal(value, after.transformer.reference.state_dict()[name]), name
    assert not torch.equal(before.transformer.h[0].attn.c_attn.weight, after.transformer.h[0].attn.c_attn.weight)
    card = (out / "README.md").read_text()  # the card's snippet loads it from the code in the folder
    assert "trust_remote_code=True" in card and "import groundup" not in card


def test_a_loaded_folder_computes_the_configured_bins(assembled):
    """The soft bins must be the config's (centres 0, 2, ..., 18 nats), not whatever memory a loaded model's buffers
    held: once they were a non-persistent buffer, and `from_pretrained` left it uninitialised."""
    import math

    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(assembled)
    config = model.config
    s = torch.tensor([[0.0, 2.0, 5.0, config.surprisal_max]])
    features = model.transformer.surprisal_features(s)
    centres = [config.surprisal_max * i / (config.surprisal_bins - 1) for i in range(config.surprisal_bins)]
    expected = [[*(math.exp(-0.5 * (v - c) ** 2) for c in centres), v / config.surprisal_max] for v in s[0].tolist()]
    assert torch.allclose(features[0], torch.tensor(expected), atol=1e-6)


def test_copy_suggestions_follow_the_longest_earlier_match():
    from groundup.models.surprisal import copy_suggestions

    #        0  1  2  3  4  5  6  7  8  9
    ids = [[5, 6, 7, 8, 9, 5, 6, 7, 3, 7]]
    next_ids, lengths = copy_suggestions(torch.tensor(ids), None, max_match=16)
    assert lengths[0].tolist() == [0, 0, 0, 0, 0, 1, 2, 3, 0, 1]
    # "5 6 7" again at 5-7: the token after the first "5 6 7" is 8; the last 7 matches only itself, most recent
    # earlier 7 is at 7 (followed by 3)
    assert next_ids[0, 5:8].tolist() == [6, 7, 8] and next_ids[0, 9] == 3
    capped = copy_suggestions(torch.tensor(ids), None, max_match=2)[1]
    assert capped[0].tolist() == [0, 0, 0, 0, 0, 1, 2, 2, 0, 1]
    # left padding (mask 0) matches nothing, and the answer does not depend on it
    padded = torch.tensor([[5, 5, 5, *ids[0]]])
    mask = torch.tensor([[0, 0, 0] + [1] * 10])
    next_p, lengths_p = copy_suggestions(padded, mask, max_match=16)
    assert lengths_p[0, 3:].tolist() == lengths[0].tolist() and next_p[0, 3:][lengths[0] > 0].tolist() == \
        next_ids[0][lengths[0] > 0].tolist()
    assert lengths_p[0, :3].tolist() == [0, 0, 0]


def test_copy_feature_starts_silent_and_survives_save_and_load(tiny_model_dir, tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    plain = AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()
    model = assemble(tiny_model_dir, tiny_model_dir, copy_max_match=8).eval()
    assert torch.equal(model.transformer.copy_projection.weight, torch.eye(model.config.n_embd))
    assert model.transformer.copy_gate.weight.abs().sum() == 0
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    batch = _inputs(tokenizer, ["Arel Bram was born in Velmora. Arel Bram was born in", QUESTIONS[0]])
    # an open gate changes the output where a match exists
    loaded = _silent_until_opened_and_saved_with_it(model, plain, batch, lambda m: m.copy_gate.weight.fill_(1.0),
                                                    tmp_path / "m")
    assert loaded.config.copy_max_match == 8
    from groundup.core.model_card import write_model_card

    card = write_model_card(tmp_path / "m", title="t", summary="s").read_text()
    assert "in-context copy feature" in card and "up to 8 tokens" in card and "trust_remote_code=True" in card


def test_window_surprisal_reads_each_token_after_a_document_start_and_its_window(tiny_model_dir, tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    plain = AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()
    model = assemble(tiny_model_dir, tiny_model_dir, surprisal_window=2).eval()
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    start = model.config.bos_token_id
    batch = _inputs(tokenizer, QUESTIONS)
    mask = batch["attention_mask"].bool()
    with torch.no_grad():
        s = model.transformer.window_surprisal(batch["input_ids"], batch["attention_mask"])
        row = batch["input_ids"][0][mask[0]]
        for t in range(len(row)):  # by hand: a document start, the (up to) two tokens before, then the token
            context = [start] * max(0, 2 - t) + row[max(0, t - 2):t].tolist()
            logp = torch.log_softmax(plain(torch.tensor([[start, *context]])).logits[0, -1], -1)
            assert torch.isclose(s[0][mask[0]][t], -logp[row[t]], atol=1e-4)
        alone = model.transformer.window_surprisal(tokenizer([QUESTIONS[1]], return_tensors="pt")["input_ids"])
        assert torch.allclose(s[1][mask[1]], alone[0], atol=1e-4)  # left padding changes nothing
        assert (s[~mask] == 0).all()
    # random weights: a constant vector would not show (the first layer norm subtracts it)
    loaded = _silent_until_opened_and_saved_with_it(
        model, plain, batch, lambda m: torch.nn.init.normal_(m.window_surprisal_embedding.weight, std=0.1),
        tmp_path / "m")
    assert loaded.config.surprisal_window == 2
    from groundup.core.model_card import write_model_card

    card = write_model_card(tmp_path / "m", title="t", summary="s").read_text()
    assert "only the 2 tokens before each token" in card and "trust_remote_code=True" in card
    with pytest.raises(GroundupError, match="surprisal_window"):
        main(["--base", str(tiny_model_dir), "--model", str(tiny_model_dir), "--output_dir", str(tmp_path / "o"),
              "--surprisal_window", "-1"])
