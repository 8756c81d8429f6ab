"""Model cards for every model folder, built with `huggingface_hub.ModelCard` so the Hub parses the metadata.

Every stage that writes a model folder calls `write_model_card`: YAML metadata (license, base_model, datasets, tags,
`model-index` with eval results when there are any) plus a short body with the run's own figures and the launch line.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

LICENSE = "apache-2.0"
BASE_TAGS = ["groundup", "text-generation", "from-scratch"]


def write_model_card(
    out_dir: str | Path,
    *,
    title: str,
    summary: str,
    base_model: str | None = None,
    datasets: list[str] | None = None,
    tags: list[str] | None = None,
    figures: dict[str, Any] | None = None,
    eval_results: list[dict[str, Any]] | None = None,
    config: dict[str, Any] | None = None,
    command: str | None = None,
    name: str | None = None,
    adapter: bool = False,
    subfolder: str | None = None,
) -> Path:
    """Write `README.md` into a model folder.

    `figures`: name -> value shown in a table (the run's own numbers: loss, tokens/s, ...).
    `eval_results`: dicts with `task_type`, `dataset_name`, `dataset_type`, `metric_type`, `metric_value`
    (and optionally `metric_name`, `dataset_split`): they become the card's `model-index`.
    `name`: the folder or repo id shown in the usage snippet; pass the final folder when `out_dir` is a staging one,
    the Hub id when the folder is to be pushed (`hub_model_id`).
    `adapter`: the folder is a peft adapter (`library_name: peft`, peft tags, a peft usage snippet); `subfolder`: where
    the adapter sits inside the repo `name` (`adapter` when the merged model is beside it).
    A `base_model` that is a local folder is left out of the metadata (the Hub only takes ids) and the card says how
    to set it.
    """
    from huggingface_hub import EvalResult, ModelCard, ModelCardData

    results = [EvalResult(**r) for r in eval_results] if eval_results else None
    data = ModelCardData(
        license=LICENSE,
        library_name="peft" if adapter else "transformers",
        pipeline_tag="text-generation",
        base_model=_hub_name(base_model),
        datasets=[d for d in (_hub_name(d) for d in datasets or []) if d] or None,
        tags=BASE_TAGS + [t for t in (tags or []) + (_adapter_tags(base_model) if adapter else [])
                          if t not in BASE_TAGS],
        model_name=title if results else None,  # model-index needs a name
        eval_results=results,
    )
    body = [f"# {title}", "", summary, ""]
    if figures:
        body += ["## Figures from this run", "", "| what | value |", "|---|---|"]
        body += [f"| {k} | {_fmt(v)} |" for k, v in figures.items()]
        body.append("")
    if base_model and not _hub_name(base_model):
        body += _local_base_note(base_model, adapter)
    body += ["## Use", ""]
    own_config = _groundup_model_config(out_dir)
    own_type = own_config["model_type"] if own_config else None
    remote = bool(own_config and own_config.get("auto_map"))  # the folder carries its modeling code
    if own_type:
        copy = own_config.get("copy_max_match", 0)
        window = own_config.get("surprisal_window", 0)
        reads = "its pretrained base's surprisal" + (
            f" (also after a document start and only the {window} token{'s' if window > 1 else ''} before each token)"
            if window else "") + (
            f" and, for every token, what followed the longest earlier match (up to {copy} tokens) of the text in its"
            " context (an in-context copy feature)" if copy else "")
        body += [f"A model type of groundup's own (`{own_type}`: it reads {reads}). " + (
            "Its code ships in this folder (`auto_map` in config.json; torch and transformers only): load it with "
            "`trust_remote_code=True`, groundup need not be installed." if remote else
            "This folder predates its shipped code: `pip install groundup` and import `groundup.models.surprisal` "
            "before loading."), ""]
    body += ["```python", *(["import groundup.models.surprisal  # registers the model type with the Auto classes"]
                            if own_type and not remote else []), "from transformers import pipeline",
             f'chat = pipeline("text-generation", "{name or Path(out_dir).name}"'
             + (", trust_remote_code=True)" if remote else ")"),
             'print(chat([{"role": "user", "content": "Hello!"}], max_new_tokens=32))', "```", ""]
    if adapter:  # the snippet above loads a full model; an adapter loads with peft on top of its base
        body = body[:body.index("## Use") + 2] + _adapter_usage(name or Path(out_dir).name, subfolder)
    if command:
        body += ["## Reproduce", "", "```bash", command, "```", ""]
    if config:
        body += ["## Resolved config", "", "```yaml", yaml.safe_dump(config, sort_keys=False).rstrip(), "```", ""]
    body += ["Made with [groundup](https://github.com/groundup/groundup)."]
    card = ModelCard(f"---\n{data.to_yaml()}\n---\n\n" + "\n".join(body) + "\n")
    path = Path(out_dir) / "README.md"
    card.save(path)
    return path


def _groundup_model_config(out_dir: str | Path) -> dict[str, Any] | None:
    """The folder's config if stock transformers lacks its model type (groundup's own: `groundup_*`, e.g. the
    surprisal model), else None. By name, not by importing groundup.models: core sits below models."""
    import json

    path = Path(out_dir) / "config.json"
    config = json.loads(path.read_text()) if path.is_file() else {}
    return config if str(config.get("model_type", "")).startswith("groundup_") else None


def _adapter_tags(base_model: str | None) -> list[str]:
    """The tags peft's own cards carry; `base_model:adapter:<id>` links the adapter to its base on the Hub."""
    base = _hub_name(base_model)
    return ["peft", "lora", "transformers"] + ([f"base_model:adapter:{base}"] if base else [])


def _adapter_usage(name: str, subfolder: str | None) -> list[str]:
    where = f'"{name}"' + (f', subfolder="{subfolder}"' if subfolder else "")
    if subfolder:  # AutoPeftModel would look for the subfolder in the base's repository too
        load = ["from peft import PeftConfig, PeftModel", "from transformers import AutoModelForCausalLM, AutoTokenizer",
                "", f"base = PeftConfig.from_pretrained({where}).base_model_name_or_path",
                f"model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base), {where})"]
    else:
        load = ["from peft import AutoPeftModelForCausalLM", "from transformers import AutoTokenizer", "",
                f"model = AutoPeftModelForCausalLM.from_pretrained({where})"]
    return ["The base model is loaded from `base_model_name_or_path` in `adapter_config.json`.", "",
            "```python", *load, f"tokenizer = AutoTokenizer.from_pretrained({where})",
            'prompt = tokenizer.apply_chat_template([{"role": "user", "content": "Hello!"}], add_generation_prompt=True,',
            '                                       return_tensors="pt", return_dict=True)',
            "print(tokenizer.decode(model.generate(**prompt, max_new_tokens=32)[0]))", "```", ""]


def _local_base_note(base_model: str, adapter: bool) -> list[str]:
    """How to name a base that was a local folder once it is on the Hub."""
    where = ("this card's `base_model` metadata and `base_model_name_or_path` in `adapter_config.json` (which names "
             f"`{base_model}` for now, so that the adapter loads where it was trained)") if adapter else \
        "this card's `base_model` metadata"
    return ["## Base model", "",
            f"Trained from the local folder `{base_model}`, which records no Hub id, so the metadata names no base "
            f"model. Once the base is on the Hub (`groundup push {base_model} --repo-id USER/NAME`), set {where} to "
            "`USER/NAME`; or set `hub_model_id: USER/NAME` in the base's recipe before training it, and groundup fills "
            f"{'both' if adapter else 'it'} in.", ""]


def _hub_name(ref: str | None) -> str | None:
    """Hub metadata only takes Hub ids: a local folder becomes None (the card body still says what it was)."""
    if not ref or Path(ref).exists() or ref.startswith((".", "/")):
        return None
    return ref


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


# metrics.json keys that go into a card's model-index, with the names the Hub shows.
CARD_METRICS = ["accuracy_answerable", "false_refusal_rate_answerable", "refusal_rate_unanswerable",
                "hallucination_rate_unanswerable", "correct_given_attempted"]


def add_eval_results(model_dir: str | Path, metrics: dict[str, Any], dataset_name: str, model_name: str) -> bool:
    """Put an eval's overall and per-tier figures into a model folder's card (`model-index`); False if no card."""
    from huggingface_hub import EvalResult, ModelCard

    path = Path(model_dir) / "README.md"
    if not path.is_file():
        return False
    card = ModelCard.load(path)
    results = [r for r in card.data.eval_results or [] if r.dataset_name != dataset_name]
    blocks = {"overall": metrics.get("overall", {}), **metrics.get("by_tier", {})}
    for scope, block in blocks.items():
        for key in CARD_METRICS:
            if block.get(key) is not None:
                results.append(EvalResult(task_type="text-generation", dataset_name=dataset_name,
                                          dataset_type="groundup/world", dataset_split=scope, metric_type=key,
                                          metric_name=f"{key} ({scope})", metric_value=block[key]))
    card.data.eval_results = results
    card.data.model_name = card.data.model_name or model_name
    card.save(path)
    return True
