"""The README's commands name things that exist: make targets, CLI stages, recipe scripts, configs, launch configs;
its links, the docs' (docs/) and the presets' results pages' (recipes/<preset>/README.md) reach a file and a heading
that exist.

(The stages themselves run in the other tests and in the smoke speedrun; this keeps the README from drifting.)
"""

import re
import shlex

from groundup.pipeline.stages import STAGES

from .conftest import REPO

README = (REPO / "README.md").read_text()
BLOCKS = re.findall(r"```(?:bash|sh)?\n(.*?)```", README, flags=re.S)
INLINE = re.findall(r"`([^`\n]+)`", re.sub(r"```.*?```", "", README, flags=re.S))
COMMANDS = [line.split(" #")[0].strip() for text in BLOCKS + INLINE for line in text.splitlines()
            if re.match(r"\s*(make |groundup |python recipes/|accelerate launch|torchrun )", line)]


def _paths(words):
    """Values of --config / --config_file flags and recipe scripts named in a command."""
    for i, word in enumerate(words):
        if word in ("--config", "--config_file") and i + 1 < len(words):
            yield words[i + 1]
        elif word.startswith("recipes/") and word.endswith(".py"):
            yield word


def test_readme_has_commands():
    assert any(c.startswith("make demo") for c in COMMANDS) and any(c.startswith("make test") for c in COMMANDS)


def test_every_readme_command_names_existing_things():
    makefile = (REPO / "Makefile").read_text()
    problems = []
    for command in COMMANDS:
        if "<" in command.split(" --")[0]:
            continue  # a pattern like `groundup <stage> ...`, not a command
        words = shlex.split(command.replace("[", "").replace("]", "").replace("...", ""))
        if words[0] == "make":
            target = words[1]
            if not re.search(rf"^{re.escape(target)}:", makefile, flags=re.M):
                problems.append(f"{command}: no make target {target}")
        if words[0] == "groundup" and len(words) > 1 and words[1] not in STAGES and not words[1].startswith("-"):
            problems.append(f"{command}: no stage {words[1]}")
        for path in _paths(words):
            if "<" in path or path.startswith("runs/"):
                continue  # a placeholder or a run's own output
            if not (REPO / path).exists():
                problems.append(f"{command}: {path} does not exist")
    assert not problems, "\n".join(problems)


def _anchor(heading):
    """GitHub's anchor for a markdown heading: lower case, punctuation dropped, spaces to hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def test_links_reach_existing_files_and_headings():
    pages = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md")),
             *sorted((REPO / "recipes").glob("*/README.md"))]
    assert len(pages) > 1, "the lab notes (docs/experiments.md) are gone but the README links to them"
    anchors = {}
    for page in pages:
        text = re.sub(r"```.*?```", "", page.read_text(), flags=re.S)
        anchors[page.resolve()] = {_anchor(h) for h in re.findall(r"^#+ (.*)$", text, flags=re.M)}
    problems = []
    for page in pages:
        for target in re.findall(r"\]\(([^)\s]+)\)", page.read_text()):
            if re.match(r"[a-z]+:", target):
                continue  # https:, mailto: (not reachable from here)
            path, _, anchor = target.partition("#")
            file = (page.parent / path).resolve() if path else page.resolve()
            if not file.exists():
                problems.append(f"{page.name}: {target}: no file {path}")
            elif anchor and anchor not in anchors.get(file, set()):
                problems.append(f"{page.name}: {target}: no heading #{anchor} in {file.name}")
    assert not problems, "\n".join(problems)
