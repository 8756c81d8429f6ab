"""The chat format every groundup model speaks: ChatML special tokens, the Jinja chat template, the refusal.

The template marks each assistant turn, end-of-turn token included, with `{% generation %}` so TRL's
`assistant_only_loss=True` trains on exactly that span (and on nothing else). `render_chat` is the same format
in plain Python for writing chat text before any tokenizer exists (the world stage); a test keeps the two in step.
"""

from __future__ import annotations

DOC_TOKEN = "<|endoftext|>"  # document separator in pretraining; also bos
PAD_TOKEN = "<|pad|>"
TURN_START = "<|im_start|>"
TURN_END = "<|im_end|>"  # end of turn: generation stops here
SPECIAL_TOKENS = [DOC_TOKEN, PAD_TOKEN, TURN_START, TURN_END]

# The canonical refusal the honesty data teaches. Graders also accept the variants in `REFUSAL_LEXICON`.
REFUSAL = "I don't know."
REFUSAL_LEXICON = (
    "i don't know",
    "i do not know",
    "i'm not sure",
    "i am not sure",
    "i have no information",
    "i'm unable to answer",
    "i cannot answer",
    "no idea",
    "unknown",
)

CHAT_TEMPLATE = (
    "{%- for message in messages %}"
    "{%- if message['role'] == 'assistant' %}"
    "{{- '" + TURN_START + "assistant\\n' }}"
    "{%- generation %}{{- message['content'] + '" + TURN_END + "' }}{%- endgeneration %}"
    "{{- '\\n' }}"
    "{%- else %}"
    "{{- '" + TURN_START + "' + message['role'] + '\\n' + message['content'] + '" + TURN_END + "\\n' }}"
    "{%- endif %}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '" + TURN_START + "assistant\\n' }}{%- endif %}"
)


def conversation(user: str, reply: str, system: str | None = None) -> list[dict[str, str]]:
    """One exchange as chat messages, the system message first when there is one."""
    messages = [{"role": "system", "content": system}] if system else []
    return [*messages, {"role": "user", "content": user}, {"role": "assistant", "content": reply}]


def preference_pair(user: str, chosen: str, rejected: str, system: str | None = None) -> dict[str, list]:
    """A DPO row in TRL's conversational preference format: {"prompt", "chosen", "rejected"}, the prompt being the
    system message (if any) and the user turn."""
    *prompt, chosen_message = conversation(user, chosen, system)
    return {"prompt": prompt, "chosen": [chosen_message], "rejected": [{"role": "assistant", "content": rejected}]}


def render_chat(messages: list[dict[str, str]], add_generation_prompt: bool = False) -> str:
    """`CHAT_TEMPLATE` in Python: the text `tokenizer.apply_chat_template(messages, tokenize=False)` gives."""
    parts = []
    for message in messages:
        if message["role"] == "assistant":
            parts.append(f"{TURN_START}assistant\n{message['content']}{TURN_END}\n")
        else:
            parts.append(f"{TURN_START}{message['role']}\n{message['content']}{TURN_END}\n")
    if add_generation_prompt:
        parts.append(f"{TURN_START}assistant\n")
    return "".join(parts)


def is_refusal(text: str) -> bool:
    """True when a response declines to answer (canonical refusal or a lexicon phrase)."""
    lowered = text.strip().lower().replace("\u2019", "'")
    return any(phrase in lowered for phrase in REFUSAL_LEXICON)
