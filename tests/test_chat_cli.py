import subprocess

from groundup.evaluate.chat_cli import fit_history

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


def test_min_answer_prob_withholds_an_unsure_reply(tiny_model_dir):
    from groundup.evaluate.chat_cli import load_chat_model, reply

    tokenizer, model = load_chat_model(str(tiny_model_dir))
    for question in ("Where was Arel Thornby born?", "hello", "Who are you?", "What is your name?"):
        messages = [{"role": "user", "content": question}]
        plain = reply(tokenizer, model, messages, 6, 0.0)
        if plain:  # a random model may end its turn at once; an empty answer has no probability to check
            break
    assert plain and plain != "I don't know."  # a random model never refuses
    assert reply(tokenizer, model, messages, 6, 0.0, min_answer_prob=0.0) == plain
    assert reply(tokenizer, model, messages, 6, 0.0, min_answer_prob=1.0) == "I don't know."
    result = subprocess.run([PYTHON, "-m", "groundup.cli", "chat", str(tiny_model_dir), "--min-answer-prob", "0.5",
                             "--temperature", "0.7"], input="", capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and "greedy" in result.stderr
