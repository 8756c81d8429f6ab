"""`groundup chat DIR [--system TEXT]`: talk to a model folder in the terminal, tokens streamed as they come.

Keeps the conversation as history, rendered with the model's own chat template, and drops the oldest turns (never
the system prompt) when the history no longer fits the context window. Type /reset to forget, /exit or Ctrl-D to quit.
"""

from __future__ import annotations

import argparse
import sys

from groundup.core.errors import GroundupError


def fit_history(tokenizer, messages: list[dict], budget: int) -> list[dict]:
    """The longest suffix of the conversation (system prompt kept) whose prompt takes at most `budget` tokens."""
    system = [m for m in messages[:1] if m["role"] == "system"]
    turns = messages[len(system):]
    while turns:
        prompt = tokenizer.apply_chat_template(system + turns, tokenize=True, add_generation_prompt=True,
                                               return_dict=True)["input_ids"]
        if len(prompt) <= budget:
            return system + turns
        turns = turns[2:] if len(turns) > 1 else []  # drop the oldest user/assistant exchange
    raise GroundupError(f"the message does not fit the context window ({budget} tokens left for the prompt)")


def load_chat_model(folder: str, trust_remote_code: bool = False):
    from groundup.models.loader import load_model_and_tokenizer

    try:
        model, tokenizer = load_model_and_tokenizer(folder, trust_remote_code=trust_remote_code, use_safetensors=True)
    except GroundupError as err:
        raise GroundupError(f"chat: cannot load a model from {folder} ({err})") from None
    if not tokenizer.chat_template:
        raise GroundupError(f"chat: the tokenizer in {folder} has no chat template")
    return tokenizer, model


def _context(model) -> int:
    from groundup.models.loader import context_length

    return context_length(model) or 2048


def reply(tokenizer, model, messages: list[dict], max_new_tokens: int, temperature: float, streamer=None,
          min_answer_prob: float | None = None) -> str:
    """The assistant's next message. `min_answer_prob` (greedy only): if the least likely token of the answer had a
    lower probability, the answer is withheld and "I don't know." given instead (then nothing is streamed: the answer
    is only known to be sure enough once it is complete)."""
    import torch
    from transformers import LogitsProcessorList

    from groundup.core.chat import REFUSAL, is_refusal
    from groundup.evaluate.generation import ChosenTokenProbability, eos_token_ids

    context = _context(model)
    inputs = tokenizer.apply_chat_template(messages, tokenize=True, add_generation_prompt=True, return_dict=True,
                                           return_tensors="pt")
    eos = model.generation_config.eos_token_id or tokenizer.eos_token_id
    new_tokens = min(max_new_tokens, context - inputs["input_ids"].shape[1])
    recorder = ChosenTokenProbability() if min_answer_prob is not None else None
    with torch.no_grad():
        output = model.generate(**inputs, max_new_tokens=new_tokens, do_sample=temperature > 0,
                                temperature=temperature if temperature > 0 else None, top_p=None, top_k=None,
                                eos_token_id=eos, pad_token_id=tokenizer.pad_token_id,
                                streamer=None if recorder else streamer,
                                logits_processor=LogitsProcessorList([recorder]) if recorder else None)
    generated = output[:, inputs["input_ids"].shape[1]:]
    answer = tokenizer.decode(generated[0], skip_special_tokens=True).strip()
    if recorder is not None:
        prob = recorder.answer_confidence(generated, eos_token_ids(model, tokenizer))[0]
        if prob is not None and prob < min_answer_prob and not is_refusal(answer):
            answer = REFUSAL
        if streamer is not None:
            print(answer, flush=True)
    return answer


def main(argv: list[str] | None = None) -> None:
    from transformers import TextStreamer

    parser = argparse.ArgumentParser(prog="groundup chat", description=__doc__.splitlines()[0])
    parser.add_argument("folder", help="A model folder with a chat template, e.g. runs/tiny/dpo.")
    parser.add_argument("--system", default=None, help="System prompt for the whole conversation.")
    parser.add_argument("--max-new-tokens", "--max_new_tokens", type=int, default=64)
    parser.add_argument("--temperature", type=float, default=0.0, help="0 = greedy (default).")
    parser.add_argument("--min-answer-prob", "--min_answer_prob", type=float, default=None,
                        help="Selective answering (greedy): say \"I don't know.\" instead of an answer whose least "
                             "likely token had a lower probability (as groundup eval --min_answer_prob).")
    parser.add_argument("--trust-remote-code", "--trust_remote_code", action="store_true")
    args = parser.parse_args(argv)
    if args.min_answer_prob is not None and (args.temperature > 0 or not 0.0 <= args.min_answer_prob <= 1.0):
        parser.error("--min-answer-prob needs greedy decoding (--temperature 0) and a probability from 0 to 1")

    tokenizer, model = load_chat_model(args.folder, args.trust_remote_code)
    context = _context(model)
    history: list[dict] = [{"role": "system", "content": args.system}] if args.system else []
    interactive = sys.stdin.isatty()
    if interactive:
        print(f"chatting with {args.folder} ({context}-token context); /reset forgets, /exit quits")
    streamer = TextStreamer(tokenizer, skip_prompt=True, skip_special_tokens=True)
    while True:
        try:
            line = input("you> " if interactive else "")
        except EOFError:
            break
        line = line.strip()
        if not line:
            continue
        if line == "/exit":
            break
        if line == "/reset":
            history = history[:1] if args.system else []
            continue
        history = fit_history(tokenizer, history + [{"role": "user", "content": line}],
                              context - min(args.max_new_tokens, context // 2))
        print("assistant> ", end="", flush=True)
        answer = reply(tokenizer, model, history, args.max_new_tokens, args.temperature, streamer,
                       args.min_answer_prob)
        history.append({"role": "assistant", "content": answer})
