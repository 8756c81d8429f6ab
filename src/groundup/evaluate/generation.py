"""Batched answer generation for any causal LM: left padding, KV cache, greedy or k samples, stop at end of turn.

Why these choices:
- **Left padding** puts every prompt's last token in the last column, so one `generate` call continues all prompts of a
  batch in step (right padding would make padded rows continue from pad tokens). Prompts are sorted by length before
  batching, so a batch pads little, and results come back in the caller's order.
- **KV cache** (`use_cache=True`): each new token attends to cached keys/values instead of re-running the whole
  prefix; `bench/bench_eval.py` measures what batching plus cache buy against one question at a time without cache.
- **Stopping**: generation of a row ends at any end-of-sequence id: the tokenizer's eos (our `<|im_end|>`), the ids in
  the model's `generation_config.eos_token_id` (Hub chat models often list several), and `<|im_end|>` / `<|im_start|>`
  when the vocab has them. The `few_shot` format (for a base model that has no chat behaviour) also stops at a blank
  line.
- **Prompt formats**: `chat` applies the tokenizer's chat template with `add_generation_prompt=True`; `few_shot`
  writes plain text, "Q: ...\\nA: <answer sentence>\\n\\n" for a few examples from a *training* pool, then "Q: ...\\nA:";
  `cloze` continues the given text itself (a biography sentence cut before the value, for a base model: see
  `groundup.data.schema.Schema.cloze_prefix`) and stops at the end of the sentence.
"""

from __future__ import annotations

import contextlib
import random
from dataclasses import dataclass
from typing import Any, Iterator, Mapping, Protocol, Sequence

from groundup.core.chat import REFUSAL, TURN_END, TURN_START
from groundup.core.errors import GroundupError
from groundup.data.schema import Schema, answer_text
from groundup.models.loader import context_length

PROMPT_FORMATS = ("chat", "few_shot", "cloze")
FEW_SHOT_STOPS = ("\n\n", "\nQ:")
CLOZE_STOPS = (".", "\n")


class Generator(Protocol):
    """What the evaluation and the probe need from a model: answers to questions. A test can script one."""

    def generate(self, questions: Sequence[str], num_samples: int = 1, do_sample: bool = False,
                 desc: str = "generate", seed: int | None = None) -> list[list[str]]:
        """`num_samples` answers per question (one list per question, in order)."""
        ...


def few_shot_prefix(rows: Sequence[Mapping[str, Any]], n: int, include_refusal: bool = False, seed: int = 0,
                    exclude_names: set[str] | None = None, schema: Schema | None = None) -> str:
    """A plain-text few-shot prefix from `n` rows of a *training* question file (never eval people).

    Rows with a `name` in `exclude_names` are skipped. Answers are the sentence SFT teaches (the `schema`'s answer
    sentence) when the row has a `name` and an `attribute` the schema has a sentence for, else the gold answer.
    Attributes are varied where possible. `include_refusal` adds one unanswerable example answered with the canonical
    refusal, when the rows have one.
    """
    exclude_names = exclude_names or set()
    rows = [r for r in rows if r.get("name") not in exclude_names]
    answerable = [r for r in rows if r.get("answer") is not None]
    rng = random.Random(seed)
    rng.shuffle(answerable)
    chosen, seen_attrs = [], set()
    for row in answerable:  # one example per attribute first, then any
        if len(chosen) < n and row.get("attribute") not in seen_attrs:
            chosen.append(row)
            seen_attrs.add(row.get("attribute"))
    for row in answerable:
        if len(chosen) < n and row not in chosen:
            chosen.append(row)
    if len(chosen) < n:
        raise GroundupError(f"few-shot examples: wanted {n}, the training file has only {len(chosen)} answerable rows")
    shots = [(row["question"], answer_text(row, row["answer"], schema)) for row in chosen]
    if include_refusal:
        unanswerable = [r for r in rows if r.get("answer") is None]
        if unanswerable:
            shots.insert(rng.randrange(len(shots) + 1), (rng.choice(unanswerable)["question"], REFUSAL))
    return "".join(f"Q: {q}\nA: {a}\n\n" for q, a in shots)


def truncate_at_stops(text: str, stops: Sequence[str]) -> str:
    cut = len(text)
    for stop in stops:
        i = text.find(stop)
        if i != -1:
            cut = min(cut, i)
    return text[:cut].strip()


@contextlib.contextmanager
def torch_threads(n: int | None) -> Iterator[None]:
    """Run with `n` intra-op threads (None: leave torch's setting), restoring the previous setting afterwards.

    Generation on a ~1M-parameter model does many tiny matrix products; on a shared 2-core CPU, 2 threads measured
    4x *slower* than 1 (threads wait on each other while other processes hold the cores), so the tiny recipes set 1.
    """
    import torch

    if n is None:
        yield
        return
    previous = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def load_model_and_tokenizer(model_id: str, trust_remote_code: bool = False, dtype: str = "auto",
                             device: str = "auto", revision: str | None = None):
    """`AutoModelForCausalLM` + `AutoTokenizer` (left padding, a pad token) from a folder or a Hub id, in eval mode
    (`groundup.models.loader`). dtype "auto": float32 on CPU (no fast bf16 there), the checkpoint's own dtype on GPU.
    """
    from groundup.models import loader

    device = loader.resolve_device(device)
    model, tokenizer = loader.load_model_and_tokenizer(model_id, dtype=loader.resolve_dtype(dtype, device),
                                                       device=device, revision=revision,
                                                       trust_remote_code=trust_remote_code)
    tokenizer.padding_side = "left"
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return model, tokenizer


def eos_token_ids(model, tokenizer) -> list[int]:
    """Every id that ends a turn: tokenizer eos, the model's generation_config eos list, and, when the vocabulary has
    them, `<|im_end|>` and `<|im_start|>` (a model that starts a new turn has finished its answer)."""
    ids: list[int] = []
    gen_eos = getattr(model.generation_config, "eos_token_id", None)
    for value in ([tokenizer.eos_token_id], gen_eos if isinstance(gen_eos, list) else [gen_eos]):
        ids += [i for i in value if i is not None]
    for token in (TURN_END, TURN_START):
        token_id = tokenizer.convert_tokens_to_ids(token)
        if isinstance(token_id, int) and token_id >= 0 and token_id != tokenizer.unk_token_id:
            ids.append(token_id)
    return list(dict.fromkeys(ids))


class ChosenTokenProbability:
    """A logits processor that records, at every greedy step, the probability the model gives to the token it picks
    (the largest softmax value of the scores it is handed; it changes nothing).

    `answer_confidence` turns these into one number per answer: the probability of its *least* likely token, up to
    the end of the turn. A fact the model half remembers shows up as one low-probability token (the value) in an
    otherwise certain sentence, so the minimum, unlike the product, does not fall with answer length. Selective
    answering (`min_answer_prob`) refuses below a threshold. Hand-written because transformers'
    `compute_transition_scores` needs `output_scores`, which keeps every step's full vocabulary-sized scores.
    """

    def __init__(self):
        self.steps: list = []

    def __call__(self, input_ids, scores):
        self.steps.append(scores.float().softmax(-1).max(-1).values)
        return scores

    def answer_confidence(self, new_tokens, eos_ids: Sequence[int]) -> list[float | None]:
        """Per row of `new_tokens` (generated ids, padded after the end): the minimum recorded probability before
        the first end-of-turn id; None for an empty answer."""
        import torch

        probs = torch.stack(self.steps, dim=1)[:, :new_tokens.shape[1]]
        is_end = torch.isin(new_tokens, torch.tensor(list(eos_ids), device=new_tokens.device))
        result: list[float | None] = []
        for row in range(new_tokens.shape[0]):
            ends = is_end[row].nonzero()
            length = int(ends[0]) if len(ends) else new_tokens.shape[1]
            result.append(round(float(probs[row, :length].min()), 6) if length else None)
        return result


@dataclass
class HFGenerator:
    """A `Generator` backed by a transformers model. Build with `HFGenerator.load(...)` or from a loaded model."""

    model: Any
    tokenizer: Any
    prompt_format: str = "chat"
    few_shot: str = ""  # the prefix from `few_shot_prefix`, for prompt_format few_shot
    system_prompt: str | None = None
    max_new_tokens: int = 32
    batch_size: int = 64
    temperature: float = 0.7
    top_p: float = 1.0
    top_k: int = 0
    use_cache: bool = True
    progress: bool = True

    def __post_init__(self):
        if self.prompt_format not in PROMPT_FORMATS:
            raise GroundupError(f"prompt_format {self.prompt_format!r}: choose one of {', '.join(PROMPT_FORMATS)}")
        if self.prompt_format == "chat" and not getattr(self.tokenizer, "chat_template", None):
            raise GroundupError("the tokenizer has no chat template: use prompt_format few_shot for a base model")
        if self.batch_size < 1 or self.max_new_tokens < 1:
            raise GroundupError("batch_size and max_new_tokens must be at least 1")
        self.tokenizer.padding_side = "left"
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.eos_ids = eos_token_ids(self.model, self.tokenizer)
        self.stops = {"few_shot": FEW_SHOT_STOPS, "cloze": CLOZE_STOPS}.get(self.prompt_format, (TURN_END,))

    @classmethod
    def load(cls, model_id: str, trust_remote_code: bool = False, dtype: str = "auto", device: str = "auto",
             revision: str | None = None, **kwargs) -> "HFGenerator":
        model, tokenizer = load_model_and_tokenizer(model_id, trust_remote_code, dtype, device, revision)
        return cls(model=model, tokenizer=tokenizer, **kwargs)

    def prompt(self, question: str, system: str | None = None) -> str:
        """The exact text the model continues. `system` (chat format): this question's system message, in place of
        `system_prompt`."""
        if self.prompt_format == "few_shot":
            bos = self.tokenizer.bos_token or ""
            return f"{bos}{self.few_shot}Q: {question}\nA:"
        if self.prompt_format == "cloze":
            return f"{self.tokenizer.bos_token or ''}{question}"
        messages = [{"role": "user", "content": question}]
        if system or self.system_prompt:
            messages.insert(0, {"role": "system", "content": system or self.system_prompt})
        return self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)

    def generate(self, questions: Sequence[str], num_samples: int = 1, do_sample: bool = False,
                 desc: str = "generate", seed: int | None = None,
                 systems: Sequence[str | None] | None = None) -> list[list[str]]:
        """`num_samples` answers per question: greedy (then num_samples must be 1) or sampled at `temperature`.
        `systems`: a system message per question (None entries: `system_prompt`)."""
        return self._generate(questions, num_samples, do_sample, desc, seed, systems, confidence=False)[0]

    def generate_with_confidence(self, questions: Sequence[str], desc: str = "generate",
                                 systems: Sequence[str | None] | None = None) -> tuple[list[str], list[float | None]]:
        """Greedy answers, and for each the probability of its least likely token (`ChosenTokenProbability`)."""
        answers, confidences = self._generate(questions, 1, False, desc, None, systems, confidence=True)
        return [a[0] for a in answers], confidences

    def _generate(self, questions, num_samples, do_sample, desc, seed, systems, confidence):
        import torch
        from tqdm.auto import tqdm

        from groundup.core.progress import resolve_mode
        from transformers import LogitsProcessorList

        if not do_sample and num_samples != 1:
            raise ValueError("greedy decoding gives one answer per question; set do_sample for several")
        if seed is not None:
            torch.manual_seed(seed)
        prompts = [self.prompt(q, system) for q, system in zip(questions, systems or [None] * len(questions))]
        encoded = [self.tokenizer(p, add_special_tokens=False)["input_ids"] for p in prompts]
        order = sorted(range(len(prompts)), key=lambda i: len(encoded[i]))
        limit = context_length(self.model)
        if limit is not None and encoded and len(encoded[order[-1]]) + self.max_new_tokens > limit:
            raise GroundupError(
                f"the longest prompt ({len(encoded[order[-1]])} tokens) plus max_new_tokens={self.max_new_tokens} "
                f"exceeds the model's context of {limit} tokens: shorten the prompt (fewer few-shot examples) or "
                f"lower max_new_tokens")
        answers: list[list[str]] = [[] for _ in prompts]
        confidences: list[float | None] = [None] * len(prompts)
        # Sampling multiplies the rows per call by num_samples: keep the rows per call near batch_size.
        per_call = max(1, self.batch_size // num_samples) if do_sample else self.batch_size
        device = self.model.device
        gen_kwargs: dict[str, Any] = dict(
            max_new_tokens=self.max_new_tokens, use_cache=self.use_cache, eos_token_id=self.eos_ids,
            pad_token_id=self.tokenizer.pad_token_id, num_return_sequences=num_samples, do_sample=do_sample,
        )
        if do_sample:
            gen_kwargs.update(temperature=self.temperature, top_p=self.top_p, top_k=self.top_k)
        else:  # a Hub model's generation_config may ask for sampling: override its knobs explicitly
            gen_kwargs.update(temperature=None, top_p=None, top_k=None)
        if self.prompt_format in ("few_shot", "cloze"):
            gen_kwargs.update(stop_strings=list(self.stops), tokenizer=self.tokenizer)
        batches = [order[i:i + per_call] for i in range(0, len(order), per_call)]
        with torch.inference_mode():
            bar_off = not self.progress or resolve_mode() != "bar"  # no bar frames in a redirected log
            for batch in tqdm(batches, desc=desc, disable=bar_off, unit="batch"):
                inputs = self.tokenizer.pad({"input_ids": [encoded[i] for i in batch]}, return_tensors="pt")
                inputs = {k: v.to(device) for k, v in inputs.items()}
                recorder = ChosenTokenProbability() if confidence else None
                out = self.model.generate(**inputs, **gen_kwargs,
                                          logits_processor=LogitsProcessorList([recorder]) if recorder else None)
                new_tokens = out[:, inputs["input_ids"].shape[1]:]
                texts = self.tokenizer.batch_decode(new_tokens, skip_special_tokens=True)
                for row, text in enumerate(texts):
                    answers[batch[row // num_samples]].append(truncate_at_stops(text, self.stops))
                if recorder is not None:
                    for row, value in enumerate(recorder.answer_confidence(new_tokens, self.eos_ids)):
                        confidences[batch[row]] = value
        return answers, confidences
