"""`groundup export gguf`: a GPT-2 folder as a GGUF file llama.cpp reads, checked by reading it back.

Hermetic: the models are built here from the session's tokenizer. Without llama.cpp on the machine the file is
checked three ways: every tensor and tokenizer field against the HF folder (GGUFReader), llama.cpp's GPT-2 graph
re-done in numpy from the GGUF tensors alone (same logits as transformers), and llama.cpp's BPE (GPT-2 regex, merge
ranks) re-done from the GGUF vocabulary (same token ids as the HF tokenizer). With llama-cpp-python installed, a last
test compares greedy answers of llama.cpp itself with transformers.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from groundup.core.chat import REFUSAL, TURN_END, TURN_START
from groundup.core.errors import GroundupError

pytestmark = pytest.mark.usefixtures("one_torch_thread")

PROMPTS = ["In which city was Arbel Cornwood born?", "Who are you?", "What is the birth year of Davine Kesswell?"]
TEXTS = ["Hello world", " leading space", "Où est Zoë? 123 4567 3.3", "a  b\n\n c\t\td  ", "I've 'RE you sure?",
         f"{TURN_START}user\nWho?{TURN_END}\n{TURN_START}assistant\n{REFUSAL}{TURN_END}", "🚀 (normal) 😶‍🌫️ ------======="]


def _save(model, tokenizer, out):
    from groundup.core.portable import make_portable

    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    make_portable(out)
    return out


@pytest.fixture(scope="module")
def gpt2_dirs(tokenizer_dir, tmp_path_factory):
    """A tied GPT-2 whose vocabulary is rounded up to 64 (padding rows) and an untied one, as groundup builds them."""
    import torch
    from transformers import AutoTokenizer, GPT2LMHeadModel

    from groundup.models.gpt2 import build_config

    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    root = tmp_path_factory.mktemp("gguf")
    torch.manual_seed(0)
    config = build_config(tokenizer, n_layer=2, n_embd=32, n_head=2, n_positions=64, vocab_size=len(tokenizer) + 64)
    tied = GPT2LMHeadModel(config)
    config = build_config(tokenizer, n_layer=2, n_embd=32, n_head=4, n_positions=64)
    config.tie_word_embeddings = False
    untied = GPT2LMHeadModel(config)
    with torch.no_grad():  # weights far from init, so a transposition or a swapped tensor cannot go unnoticed
        for model in (tied, untied):
            for p in model.parameters():
                p.normal_(0, 0.3)
    return {"tied": _save(tied, tokenizer, root / "tied"), "untied": _save(untied, tokenizer, root / "untied")}


def main(argv):
    """`groundup STAGE ...` as the CLI runs it (the stage looked up in STAGES, errors as one line and exit code 2)."""
    import importlib

    from groundup.cli import run_stage
    from groundup.pipeline.stages import STAGES

    return run_stage(importlib.import_module(STAGES[argv[0]]).main, argv[1:])


def _export(folder, out, *extra):
    assert main(["export", "gguf", str(folder), "--output", str(out), *extra]) == 0
    return out


def _fields(reader):
    values = {}
    for name, field in reader.fields.items():
        if not field.types:
            continue
        value = field.contents()
        values[name] = value
    return values


def _hf(folder):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    return AutoModelForCausalLM.from_pretrained(folder).eval(), AutoTokenizer.from_pretrained(folder)


@pytest.fixture(scope="module")
def exported(gpt2_dirs, tmp_path_factory):
    out = tmp_path_factory.mktemp("gguf-out")
    return {kind: _export(folder, out / f"{kind}.gguf") for kind, folder in gpt2_dirs.items()}


def test_round_trip_tensors_hparams_and_tokenizer_match_the_hf_folder(gpt2_dirs, exported):
    from gguf import GGUFReader, TokenType

    for kind in ("tied", "untied"):
        model, tokenizer = _hf(gpt2_dirs[kind])
        config = model.config
        reader = GGUFReader(exported[kind])
        f = _fields(reader)
        assert f["general.architecture"] == "gpt2"
        assert (f["gpt2.context_length"], f["gpt2.embedding_length"], f["gpt2.block_count"],
                f["gpt2.attention.head_count"], f["gpt2.feed_forward_length"]) == (
            config.n_positions, config.n_embd, config.n_layer, config.n_head, 4 * config.n_embd)
        assert f["gpt2.attention.layer_norm_epsilon"] == pytest.approx(config.layer_norm_epsilon)

        # tokenizer: every id's token in its byte-level spelling, padding rows, types, merges, special ids
        assert f["tokenizer.ggml.model"] == "gpt2" and f["tokenizer.ggml.pre"] == "gpt-2"
        tokens, types = f["tokenizer.ggml.tokens"], f["tokenizer.ggml.token_type"]
        assert len(tokens) == len(types) == config.vocab_size
        by_id = {i: t for t, i in tokenizer.get_vocab().items()}
        for i in range(config.vocab_size):
            if i in by_id:
                assert tokens[i] == by_id[i]
                expected = TokenType.CONTROL if by_id[i] in tokenizer.all_special_tokens else TokenType.NORMAL
                assert types[i] == expected, (i, by_id[i])
            else:
                assert (tokens[i], types[i]) == (f"[PAD{i}]", TokenType.UNUSED)
        merges = json.loads((gpt2_dirs[kind] / "tokenizer.json").read_text())["model"]["merges"]
        assert f["tokenizer.ggml.merges"] == [" ".join(m) if isinstance(m, list) else m for m in merges]
        end = tokenizer.convert_tokens_to_ids(TURN_END)
        assert f["tokenizer.ggml.bos_token_id"] == tokenizer.bos_token_id
        assert f["tokenizer.ggml.eos_token_id"] == f["tokenizer.ggml.eot_token_id"] == end
        assert f["tokenizer.ggml.padding_token_id"] == tokenizer.pad_token_id
        assert f["tokenizer.ggml.add_bos_token"] is False

        # tensors: the same numbers, Conv1D weights transposed to [out, in]; `output` only when untied
        state = model.state_dict()
        tensors = {t.name: np.array(t.data) for t in reader.tensors}
        assert tensors["token_embd.weight"].shape == (config.vocab_size, config.n_embd)
        np.testing.assert_array_equal(tensors["token_embd.weight"], state["transformer.wte.weight"].numpy())
        np.testing.assert_array_equal(tensors["position_embd.weight"], state["transformer.wpe.weight"].numpy())
        for i in range(config.n_layer):
            for gguf_name, hf_name, conv in [("attn_qkv", "attn.c_attn", True), ("attn_output", "attn.c_proj", True),
                                             ("ffn_up", "mlp.c_fc", True), ("ffn_down", "mlp.c_proj", True),
                                             ("attn_norm", "ln_1", False), ("ffn_norm", "ln_2", False)]:
                weight = state[f"transformer.h.{i}.{hf_name}.weight"].numpy()
                np.testing.assert_array_equal(tensors[f"blk.{i}.{gguf_name}.weight"], weight.T if conv else weight)
                np.testing.assert_array_equal(tensors[f"blk.{i}.{gguf_name}.bias"],
                                              state[f"transformer.h.{i}.{hf_name}.bias"].numpy())
        np.testing.assert_array_equal(tensors["output_norm.weight"], state["transformer.ln_f.weight"].numpy())
        assert ("output.weight" in tensors) == (kind == "untied")
        if kind == "untied":
            np.testing.assert_array_equal(tensors["output.weight"], state["lm_head.weight"].numpy())
        assert len(tensors) == 2 + 12 * config.n_layer + 2 + (kind == "untied")


def test_chat_template_renders_the_same_without_training_markers(gpt2_dirs, exported):
    import jinja2
    from gguf import GGUFReader

    _, tokenizer = _hf(gpt2_dirs["tied"])
    template = _fields(GGUFReader(exported["tied"]))["tokenizer.chat_template"]
    assert "endgeneration" not in template and "endgeneration" in tokenizer.chat_template
    messages = [{"role": "system", "content": "Be honest."}, {"role": "user", "content": PROMPTS[0]},
                {"role": "assistant", "content": REFUSAL}, {"role": "user", "content": PROMPTS[1]}]
    plain = jinja2.Environment().from_string(template)  # what llama-cpp-python does with the GGUF's template
    assert plain.render(messages=messages, add_generation_prompt=True) == tokenizer.apply_chat_template(
        messages, tokenize=False, add_generation_prompt=True)


def _llama_cpp_gpt2_logits(path, ids):
    """llama.cpp's GPT-2 graph (src/models/gpt2.cpp) in numpy, from the GGUF tensors and hparams alone."""
    from gguf import GGUFReader

    reader = GGUFReader(path)
    f = _fields(reader)
    t = {x.name: np.array(x.data, dtype=np.float64) for x in reader.tensors}
    eps, n_head = f["gpt2.attention.layer_norm_epsilon"], f["gpt2.attention.head_count"]

    def norm(x, name):
        mu, var = x.mean(-1, keepdims=True), x.var(-1, keepdims=True)
        return (x - mu) / np.sqrt(var + eps) * t[f"{name}.weight"] + t[f"{name}.bias"]

    def linear(x, name):  # ggml_mul_mat(W, x): W is [out, in] as numpy reads it
        return x @ t[f"{name}.weight"].T + t[f"{name}.bias"]

    n = len(ids)
    x = t["token_embd.weight"][ids] + t["position_embd.weight"][:n]
    for i in range(f["gpt2.block_count"]):
        q, k, v = np.split(linear(norm(x, f"blk.{i}.attn_norm"), f"blk.{i}.attn_qkv"), 3, axis=-1)
        heads = lambda a: a.reshape(n, n_head, -1).transpose(1, 0, 2)  # noqa: E731
        q, k, v = heads(q), heads(k), heads(v)
        scores = q @ k.transpose(0, 2, 1) / np.sqrt(q.shape[-1]) + np.triu(np.full((n, n), -np.inf), 1)
        att = np.exp(scores - scores.max(-1, keepdims=True))
        att /= att.sum(-1, keepdims=True)
        x = x + linear((att @ v).transpose(1, 0, 2).reshape(n, -1), f"blk.{i}.attn_output")
        h = linear(norm(x, f"blk.{i}.ffn_norm"), f"blk.{i}.ffn_up")
        h = 0.5 * h * (1 + np.tanh(np.sqrt(2 / np.pi) * (h + 0.044715 * h ** 3)))  # ggml_gelu
        x = x + linear(h, f"blk.{i}.ffn_down")
    head = t.get("output.weight", t["token_embd.weight"])  # llama.cpp reuses token_embd when output is absent
    return norm(x, "output_norm") @ head.T


def test_llama_cpp_graph_from_the_gguf_gives_the_transformers_logits(gpt2_dirs, exported):
    import torch

    for kind in ("tied", "untied"):
        model, tokenizer = _hf(gpt2_dirs[kind])
        text = tokenizer.apply_chat_template([{"role": "user", "content": PROMPTS[0]}], tokenize=False,
                                             add_generation_prompt=True)
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        with torch.no_grad():
            expected = model(torch.tensor([ids])).logits[0].double().numpy()
        got = _llama_cpp_gpt2_logits(exported[kind], ids)
        np.testing.assert_allclose(got, expected, atol=2e-4 * np.abs(expected).max())
        assert (got.argmax(-1) == expected.argmax(-1)).all()


def _llama_cpp_bpe(text, tokens, types, merges):
    """llama.cpp's BPE for `tokenizer.ggml.pre = gpt-2`: control tokens split out first (parse_special), GPT-2's
    regex (llama-vocab.cpp, LLAMA_VOCAB_PRE_TYPE_GPT2), bytes to GPT-2's unicode alphabet, merges by rank."""
    import regex
    from gguf import TokenType

    from transformers.convert_slow_tokenizer import bytes_to_unicode

    byte_char = bytes_to_unicode()
    ids = {t: i for i, t in enumerate(tokens)}
    rank = {tuple(m.split(" ")): r for r, m in enumerate(merges)}
    control = sorted((t for t, ty in zip(tokens, types) if ty == TokenType.CONTROL), key=len, reverse=True)
    split = regex.compile(r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)")
    out = []
    for part in regex.split("(" + "|".join(map(regex.escape, control)) + ")", text):
        if part in ids and part in control:
            out.append(ids[part])
            continue
        pos, words = 0, []
        for m in split.finditer(part):  # llama.cpp keeps unmatched text as its own piece
            words += ([part[pos:m.start()]] if m.start() > pos else []) + [m.group()]
            pos = m.end()
        words += [part[pos:]] if pos < len(part) else []
        for word in words:
            symbols = [byte_char[b] for b in word.encode("utf-8")]
            while len(symbols) > 1:
                pairs = [(rank.get((a, b), 1 << 30), j) for j, (a, b) in enumerate(zip(symbols, symbols[1:]))]
                best, j = min(pairs)
                if best == 1 << 30:
                    break
                symbols[j:j + 2] = [symbols[j] + symbols[j + 1]]
            out += [ids[s] for s in symbols]
    return out


def test_llama_cpp_bpe_from_the_gguf_vocabulary_gives_the_hf_token_ids(gpt2_dirs, exported):
    from gguf import GGUFReader

    _, tokenizer = _hf(gpt2_dirs["tied"])
    f = _fields(GGUFReader(exported["tied"]))
    for text in TEXTS + PROMPTS:
        assert _llama_cpp_bpe(text, f["tokenizer.ggml.tokens"], f["tokenizer.ggml.token_type"],
                              f["tokenizer.ggml.merges"]) == tokenizer(text, add_special_tokens=False)["input_ids"]


def test_f16_keeps_norms_and_biases_in_f32(gpt2_dirs, tmp_path):
    from gguf import GGMLQuantizationType, GGUFReader

    path = _export(gpt2_dirs["tied"], tmp_path / "m.gguf", "--outtype", "f16")
    reader = GGUFReader(path)
    assert _fields(reader)["general.file_type"] == 1
    for t in reader.tensors:
        assert t.tensor_type == (GGMLQuantizationType.F16 if len(t.shape) > 1 and t.shape[1] > 1
                                 else GGMLQuantizationType.F32), t.name


def test_default_output_sits_next_to_the_folder_and_is_not_overwritten(gpt2_dirs, capsys):
    from groundup.export.gguf_file import default_output

    path = default_output(gpt2_dirs["tied"])
    assert path.parent == gpt2_dirs["tied"].parent and path.name == "tied-f32.gguf"
    assert main(["export", "gguf", str(gpt2_dirs["tied"])]) == 0 and path.is_file()
    assert main(["export", "gguf", str(gpt2_dirs["tied"])]) == 2
    assert "exists; pass --overwrite" in capsys.readouterr().err
    path.unlink()


@pytest.mark.parametrize("case, message", [
    ("surprisal", "groundup's own model type `groundup_surprisal_gpt2`"),
    ("adapter", "holds a peft adapter only"),
    ("empty", "no config.json"),
    ("llama", "only GPT-2 folders"),
    ("prefix_space", "not GPT-2's byte-level regex"),
])
def test_folders_llama_cpp_cannot_run_are_refused_with_one_line(gpt2_dirs, tmp_path, capsys, case, message):
    import shutil

    folder = tmp_path / case
    if case in ("surprisal", "llama", "prefix_space"):
        shutil.copytree(gpt2_dirs["tied"], folder)
        config = json.loads((folder / "config.json").read_text())
        tok = json.loads((folder / "tokenizer.json").read_text())
        if case == "prefix_space":
            tok["pre_tokenizer"]["add_prefix_space"] = True
        else:
            config["model_type"] = {"surprisal": "groundup_surprisal_gpt2", "llama": "llama"}[case]
        (folder / "config.json").write_text(json.dumps(config))
        (folder / "tokenizer.json").write_text(json.dumps(tok))
    else:
        folder.mkdir()
        if case == "adapter":
            (folder / "adapter_config.json").write_text("{}")
    assert main(["export", "gguf", str(folder), "--output", str(tmp_path / "x.gguf")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0], err
    assert not (tmp_path / "x.gguf").exists()


def test_export_gguf_refuses_a_non_gguf_output_name(gpt2_dirs, tmp_path):
    from groundup.export.gguf_file import export_gguf

    with pytest.raises(GroundupError, match="should end in .gguf"):
        export_gguf(gpt2_dirs["tied"], tmp_path / "model.bin")


def test_llama_cpp_greedy_answers_match_transformers(gpt2_dirs, exported):
    llama_cpp = pytest.importorskip("llama_cpp")
    import torch

    from groundup.evaluate.generation import HFGenerator

    model, tokenizer = _hf(gpt2_dirs["untied"])
    llm = llama_cpp.Llama(model_path=str(exported["untied"]), n_ctx=64, n_threads=1, verbose=False)
    generator = HFGenerator(model=model, tokenizer=tokenizer, max_new_tokens=16, batch_size=1, progress=False)
    end = tokenizer.convert_tokens_to_ids(TURN_END)
    for question in PROMPTS:
        prompt = generator.prompt(question)
        ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
        assert llm.tokenize(prompt.encode(), add_bos=False, special=True) == ids
        with torch.no_grad():
            out = model.generate(torch.tensor([ids]), max_new_tokens=16, do_sample=False,
                                 eos_token_id=generator.eos_ids, pad_token_id=tokenizer.pad_token_id)
        expected = out[0, len(ids):].tolist()
        got = []
        llm.reset()
        for token in llm.generate(ids, top_k=1, temp=0.0, repeat_penalty=1.0):
            got.append(token)
            if token in generator.eos_ids or len(got) == 16:
                break
        assert got == expected[:len(got)] and (len(got) == len(expected) or end in got), question


_NODE_CHECK = """
import fs from "node:fs";
const {getLlama} = await import(process.argv[2]);
const cases = JSON.parse(fs.readFileSync(process.argv[3], "utf8"));
const llama = await getLlama({gpu: false, build: "never", logLevel: "error"});
const model = await llama.loadModel({modelPath: process.argv[4]});
const out = [];
for (const c of cases) {
  const context = await model.createContext({contextSize: 64, threads: 1});
  const ids = Array.from(model.tokenize(c.prompt, true));
  const got = [];
  for await (const t of context.getSequence().evaluate(ids, {temperature: 0})) {
    got.push(t);
    if (got.length >= c.n) break;
  }
  out.push({ids, got});
  await context.dispose();
}
console.log(JSON.stringify(out));
"""


def test_llama_cpp_via_node_llama_cpp_reads_the_file_and_answers_like_transformers(gpt2_dirs, exported, tmp_path):
    """The real llama.cpp, from npm's prebuilt node-llama-cpp (no compiler needed): opt in with
    NODE_LLAMA_CPP_DIR=<folder holding node_modules/node-llama-cpp> (`npm install node-llama-cpp@3.22.1` there)."""
    import os
    import shutil
    import subprocess

    import torch

    root = os.environ.get("NODE_LLAMA_CPP_DIR")
    entry = os.path.join(root or "", "node_modules", "node-llama-cpp", "dist", "index.js")
    if not root or not os.path.isfile(entry) or not shutil.which("node"):
        pytest.skip("set NODE_LLAMA_CPP_DIR to a folder where `npm install node-llama-cpp` ran")
    model, tokenizer = _hf(gpt2_dirs["tied"])
    cases = []
    for question in PROMPTS:
        prompt = tokenizer.apply_chat_template([{"role": "user", "content": question}], tokenize=False,
                                               add_generation_prompt=True)
        ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
        with torch.no_grad():  # a fixed length: random weights need not end the turn
            out = model.generate(torch.tensor([ids]), max_new_tokens=16, min_new_tokens=16, do_sample=False,
                                 pad_token_id=tokenizer.pad_token_id)
        cases.append({"prompt": prompt, "ids": ids, "hf": out[0, len(ids):].tolist(), "n": 16})
    (tmp_path / "cases.json").write_text(json.dumps(cases))
    (tmp_path / "check.mjs").write_text(_NODE_CHECK)
    result = subprocess.run(["node", str(tmp_path / "check.mjs"), "file://" + entry, str(tmp_path / "cases.json"),
                             str(exported["tied"])], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    for case, got in zip(cases, json.loads(result.stdout.strip().splitlines()[-1])):
        assert got["ids"] == case["ids"]  # llama.cpp's tokenizer (gpt-2 pre-tokenizer, control tokens)
        assert got["got"] == case["hf"]  # llama.cpp's greedy tokens
