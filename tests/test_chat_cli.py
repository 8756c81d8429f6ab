import subprocess

from groundup.chat_cli import fit_history

from .conftest import PYTHON


def test_fit_history_drops_oldest_exchanges_but_keeps_the_system_prompt(tokenizer_dir):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    messages = [{"role": "system", "content": "You are groundup."}]
    for i in range(6):
        messages += [{"role": "user", "content": f"question number {i} " * 5},
                     {"role": "assistant", "content": f"answer number {i} " * 5}]
    messages.append({"role": "user", "content": "last question"})
    full = len(tokenizer.apply_chat_template(messages, tokenize=True, add_generation_prompt=True,
                                             return_dict=True)["input_ids"])
    assert fit_history(tokenizer, messages, full) == messages
    kept = fit_history(tokenizer, messages, full // 2)
    assert kept[0] == messages[0] and kept[-1] == messages[-1]
    assert len(kept) < len(messages) and kept[1]["role"] == "user"
    assert len(tokenizer.apply_chat_template(kept, tokenize=True, add_generation_prompt=True,
                                             return_dict=True)["input_ids"]) <= full // 2


def test_chat_streams_replies_for_each_line_and_exits_on_eof(tiny_model_dir):
    result = subprocess.run([PYTHON, "-m", "groundup.cli", "chat", str(tiny_model_dir), "--system", "Be brief.",
                             "--max-new-tokens", "5"], input="hello\n/reset\nwho are you?\n", capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("assistant> ") == 2


def test_chat_on_a_folder_without_a_model_is_one_line(tmp_path):
    result = subprocess.run([PYTHON, "-m", "groundup.cli", "chat", str(tmp_path)], input="", capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 2 and result.stderr.startswith("error: chat: cannot load a model from")
    assert len(result.stderr.strip().splitlines()) == 1
