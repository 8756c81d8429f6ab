"""`groundup export gguf FOLDER [--output FILE] [--outtype f32|f16]`: a GPT-2 folder as one GGUF file for llama.cpp.

llama.cpp and what embeds it (llama-cpp-python, LM Studio, ollama) load and run the file.

llama.cpp's own converter (`convert_hf_to_gguf.py`, not on PyPI) refuses our folders: it hashes how the tokenizer
splits a test string to name the pre-tokenizer, and a tokenizer trained here matches none of its known hashes. This
writer uses the `gguf` package (llama.cpp's own Python library) and writes what that converter writes for GPT-2
(`conversion/gpt2.py` and `_set_vocab_gpt2` in llama.cpp):

- arch `gpt2`; hparams `context_length` (n_ctx, else n_positions), `embedding_length`, `feed_forward_length`
  (n_inner, else 4 x n_embd), `block_count`, `attention.head_count`, `attention.layer_norm_epsilon`, `file_type`;
- tensors `token_embd`, `position_embd`, `blk.N.{attn_norm, attn_qkv, attn_output, ffn_norm, ffn_up, ffn_down}`
  (weight and bias), `output_norm`, and `output` only when the head is not tied to the embeddings (llama.cpp reuses
  `token_embd` otherwise). GPT-2 stores its projections as `Conv1D` ([in, out]); GGUF wants [out, in]: transposed;
- tokenizer: `tokenizer.ggml.model = gpt2`, `pre = gpt-2` (GPT-2's byte-level regex, which our tokenizer uses: the
  export refuses a tokenizer with another pre-tokenizer or a normalizer, since llama.cpp would split text
  differently), every token of the vocabulary in its byte-level spelling (rows beyond the tokenizer, from rounding the
  vocabulary up to 64, as `[PAD<id>]`, type UNUSED), token types (special added tokens CONTROL), the merges, bos /
  eos / pad ids and the chat template (`gguf.SpecialVocab`, as llama.cpp does), `eot` = `<|im_end|>` (so llama.cpp
  stops at end of turn) and `add_bos_token = false` (groundup's prompts start with the chat template, no bos).

The chat template loses only its `{% generation %}` markers (they mark the assistant span for TRL's loss mask, render
to nothing, and plain Jinja, e.g. llama-cpp-python's, does not know the tag). groundup's surprisal-reading model type
and adapter-only folders have no llama.cpp architecture: they are refused with one line.
"""

from __future__ import annotations

import argparse
import json
import os
import re
from pathlib import Path
from typing import Any

from groundup.core.chat import TURN_END
from groundup.core.errors import GroundupError

OUTTYPES = ("f32", "f16")
# llama.cpp's GPT-2 graph applies GELU with the tanh approximation (ggml_gelu), which is GPT-2's `gelu_new`.
TANH_GELUS = ("gelu_new", "gelu_pytorch_tanh", "gelu_fast")
_GENERATION_TAG = re.compile(r"\{%-?\s*(?:end)?generation\s*-?%\}")


def default_output(folder: str | Path, outtype: str = "f32") -> Path:
    """`runs/tiny/sft-idk` -> `runs/tiny/sft-idk-f32.gguf` (next to the folder, which stays untouched)."""
    folder = Path(folder)
    return folder.parent / f"{folder.name}-{outtype}.gguf"


def _read_json(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text(encoding="utf-8"))


def check_exportable(folder: str | Path) -> dict[str, Any]:
    """The folder's config.json if llama.cpp can run it as GPT-2; else one `GroundupError` line saying why not."""
    folder = Path(folder)
    if not folder.is_dir():
        raise GroundupError(f"export gguf: {folder} is not a folder")
    if not (folder / "config.json").is_file():
        if (folder / "adapter_config.json").is_file():
            raise GroundupError(f"export gguf: {folder} holds a peft adapter only, not a model; export a merged "
                                "folder (fine-tune with `merge: true`, the default) or merge the adapter into its base")
        raise GroundupError(f"export gguf: {folder} has no config.json (is it a finished model folder?)")
    config = _read_json(folder / "config.json")
    model_type = config.get("model_type")
    if model_type == "groundup_surprisal_gpt2":
        raise GroundupError(f"export gguf: {folder} is groundup's own model type `groundup_surprisal_gpt2` (it also "
                            "runs its frozen base to read surprisal); llama.cpp has no such architecture: export a "
                            "stock GPT-2 folder (base, sft, sft-idk, dpo without surprisal)")
    if model_type != "gpt2":
        raise GroundupError(f"export gguf: {folder} is model type {model_type!r}; only GPT-2 folders (model_type "
                            "gpt2) are exported; for others use llama.cpp's convert_hf_to_gguf.py")
    problems = []
    if config.get("activation_function", "gelu_new") not in TANH_GELUS:
        problems.append(f"activation_function {config.get('activation_function')!r} (llama.cpp's GPT-2 uses "
                        "tanh-approximated GELU)")
    if config.get("scale_attn_by_inverse_layer_idx"):
        problems.append("scale_attn_by_inverse_layer_idx")
    if config.get("scale_attn_weights") is False:
        problems.append("scale_attn_weights false")
    if config.get("add_cross_attention"):
        problems.append("cross-attention")
    if problems:
        raise GroundupError(f"export gguf: {folder}: llama.cpp's GPT-2 cannot run {', '.join(problems)}")
    tokenizer_file = folder / "tokenizer.json"
    if not tokenizer_file.is_file():
        raise GroundupError(f"export gguf: {folder} has no tokenizer.json (a fast tokenizer is needed)")
    check_tokenizer(_read_json(tokenizer_file), folder)
    return config


def check_tokenizer(tokenizer: dict[str, Any], folder: Path) -> None:
    """llama.cpp's `gpt-2` pre-tokenizer is GPT-2's byte-level regex split, no normalizer, no prefix space."""
    model = tokenizer.get("model") or {}
    pre = tokenizer.get("pre_tokenizer") or {}
    if pre.get("type") == "Sequence" and len(pre.get("pretokenizers", [])) == 1:
        pre = pre["pretokenizers"][0]
    if model.get("type") != "BPE":
        raise GroundupError(f"export gguf: {folder}: tokenizer model {model.get('type')!r} is not byte-level BPE")
    if (pre.get("type") != "ByteLevel" or not pre.get("use_regex", True) or pre.get("add_prefix_space")
            or tokenizer.get("normalizer")):
        raise GroundupError(f"export gguf: {folder}: the tokenizer's pre-tokenizer is not GPT-2's byte-level regex "
                            "(no normalizer, no prefix space); llama.cpp would split text differently")


def llama_cpp_template(template: str | None) -> str | None:
    """The chat template without `{% generation %}` / `{% endgeneration %}` (they render to nothing)."""
    return _GENERATION_TAG.sub("", template) if isinstance(template, str) else template


def vocab_tokens(tokenizer: dict[str, Any], n_vocab: int) -> tuple[list[str], list[int]]:
    """(token strings, gguf token types) for ids 0..n_vocab-1, as llama.cpp's `get_vocab_base` makes them."""
    from gguf import TokenType

    by_id: dict[int, str] = {i: t for t, i in tokenizer["model"]["vocab"].items()}
    added = {a["id"]: a for a in tokenizer.get("added_tokens", [])}
    for i, a in added.items():
        by_id[i] = a["content"]
    if by_id and max(by_id) >= n_vocab:
        raise GroundupError(f"export gguf: the tokenizer has id {max(by_id)} but the model only {n_vocab} embedding "
                            "rows (tokenizer/model vocab mismatch)")
    tokens, types = [], []
    for i in range(n_vocab):
        if i not in by_id:
            tokens.append(f"[PAD{i}]")
            types.append(TokenType.UNUSED)
        elif i in added:
            content = by_id[i]
            looks_special = content.startswith("<|") and content.endswith("|>")
            tokens.append(content)
            types.append(TokenType.CONTROL if added[i].get("special") or looks_special else TokenType.USER_DEFINED)
        else:
            tokens.append(by_id[i])
            types.append(TokenType.NORMAL)
    return tokens, types


def gguf_tensors(state_dict: dict[str, Any], config: dict[str, Any], outtype: str = "f32"):
    """(gguf name, numpy array) for every tensor llama.cpp's GPT-2 reads, from a `GPT2LMHeadModel` state dict."""
    import numpy as np
    from gguf import MODEL_TENSOR, TENSOR_NAMES

    def name(tensor, bid=None, suffix="weight"):
        return TENSOR_NAMES[tensor].format(bid=bid) + f".{suffix}"

    def array(key: str, transpose: bool = False):
        value = state_dict[key].detach().float().cpu().numpy()
        value = np.ascontiguousarray(value.T if transpose else value)
        # llama.cpp's converter keeps 1-D tensors (norms, biases) in f32 whatever the outtype
        return value.astype(np.float16) if outtype == "f16" and value.ndim > 1 else value.astype(np.float32)

    out = [(name(MODEL_TENSOR.TOKEN_EMBD), array("transformer.wte.weight")),
           (name(MODEL_TENSOR.POS_EMBD), array("transformer.wpe.weight"))]
    parts = [(MODEL_TENSOR.ATTN_NORM, "ln_1", False), (MODEL_TENSOR.ATTN_QKV, "attn.c_attn", True),
             (MODEL_TENSOR.ATTN_OUT, "attn.c_proj", True), (MODEL_TENSOR.FFN_NORM, "ln_2", False),
             (MODEL_TENSOR.FFN_UP, "mlp.c_fc", True), (MODEL_TENSOR.FFN_DOWN, "mlp.c_proj", True)]
    for bid in range(config["n_layer"]):
        for tensor, hf, conv1d in parts:
            prefix = f"transformer.h.{bid}.{hf}"
            out.append((name(tensor, bid), array(f"{prefix}.weight", transpose=conv1d)))
            out.append((name(tensor, bid, "bias"), array(f"{prefix}.bias")))
    out += [(name(MODEL_TENSOR.OUTPUT_NORM), array("transformer.ln_f.weight")),
            (name(MODEL_TENSOR.OUTPUT_NORM, suffix="bias"), array("transformer.ln_f.bias"))]
    if not config.get("tie_word_embeddings", True):
        out.append((name(MODEL_TENSOR.OUTPUT), array("lm_head.weight")))
    return out


def load_state_dict(folder: Path) -> dict[str, Any]:
    """The model's weights in fp32 through transformers (sharded or single file, tied weights resolved)."""
    from groundup.models.loader import load_model

    model = load_model(str(folder), dtype="float32", use_safetensors=None)
    return model.state_dict()


def export_gguf(folder: str | Path, output: str | Path | None = None, outtype: str = "f32",
                overwrite: bool = False) -> Path:
    """Write `folder` as a GGUF file (atomically: a temporary file renamed at the end); returns its path."""
    import gguf

    if outtype not in OUTTYPES:
        raise GroundupError(f"export gguf: outtype {outtype!r}: choose one of {', '.join(OUTTYPES)}")
    folder = Path(folder)
    config = check_exportable(folder)
    output = Path(output) if output else default_output(folder, outtype)
    if output.exists() and not overwrite:
        raise GroundupError(f"export gguf: {output} exists; pass --overwrite to replace it")
    if output.suffix != ".gguf":
        raise GroundupError(f"export gguf: output {output} should end in .gguf")
    tokenizer = _read_json(folder / "tokenizer.json")
    n_vocab = config["vocab_size"]
    tokens, types = vocab_tokens(tokenizer, n_vocab)
    tensors = gguf_tensors(load_state_dict(folder), config, outtype)

    arch = gguf.MODEL_ARCH_NAMES[gguf.MODEL_ARCH.GPT2]
    output.parent.mkdir(parents=True, exist_ok=True)
    tmp = output.parent / f".{output.name}.tmp-{os.getpid()}"
    writer = gguf.GGUFWriter(tmp, arch)
    try:
        writer.add_type(gguf.GGUFType.MODEL)
        writer.add_name(folder.resolve().name)
        writer.add_context_length(config.get("n_ctx") or config["n_positions"])
        writer.add_embedding_length(config["n_embd"])
        writer.add_feed_forward_length(config.get("n_inner") or 4 * config["n_embd"])
        writer.add_block_count(config["n_layer"])
        writer.add_head_count(config["n_head"])
        writer.add_layer_norm_eps(config.get("layer_norm_epsilon", 1e-5))
        writer.add_file_type(gguf.LlamaFileType.ALL_F32 if outtype == "f32" else gguf.LlamaFileType.MOSTLY_F16)
        writer.add_quantization_version(gguf.GGML_QUANT_VERSION)

        writer.add_tokenizer_model("gpt2")
        writer.add_tokenizer_pre("gpt-2")
        writer.add_token_list(tokens)
        writer.add_token_types(types)
        special = gguf.SpecialVocab(folder, load_merges=True, n_vocab=n_vocab)
        if not special.merges:
            raise GroundupError(f"export gguf: {folder}: tokenizer.json has no merges")
        if TURN_END in tokens and "eot" not in special.special_token_ids:
            special.special_token_ids["eot"] = tokens.index(TURN_END)
        special.add_special_token.setdefault("bos", False)
        special.add_special_token.setdefault("eos", False)
        special.chat_template = llama_cpp_template(special.chat_template)
        special.add_to_gguf(writer, quiet=True)

        for name, array in tensors:
            writer.add_tensor(name, array)
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
        writer.close()
        tmp.replace(output)
    except BaseException:
        writer.close()
        tmp.unlink(missing_ok=True)
        raise
    return output


def main(argv: list[str] | None = None) -> Path:
    parser = argparse.ArgumentParser(prog="groundup export", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="format", required=True, metavar="FORMAT")
    p = sub.add_parser("gguf", help="one GGUF file for llama.cpp (stock GPT-2 folders)")
    p.add_argument("folder", help="A model folder (e.g. runs/tiny/sft-idk).")
    p.add_argument("--output", "--output_file", "--outfile", default=None,
                   help="The .gguf file to write (default: <folder>-<outtype>.gguf next to the folder).")
    p.add_argument("--outtype", choices=OUTTYPES, default="f32",
                   help="f32 (exact) or f16 (half the size; norms and biases stay f32).")
    p.add_argument("--overwrite", action="store_true", help="Replace an existing output file.")
    args = parser.parse_args(argv)
    path = export_gguf(args.folder, args.output, args.outtype, args.overwrite)
    print(f"export gguf: {args.folder} -> {path} ({path.stat().st_size / 1e6:.2f} MB, {args.outtype}); run it with "
          f"`llama-cli -m {path} -cnv` or llama_cpp.Llama(model_path=...)")
    return path
