"""`groundup push DIR --repo-id USER/NAME [--private]`: upload a model folder to the Hugging Face Hub.

The token comes from where `huggingface_hub` always looks (HF_TOKEN, then `hf auth login`'s credential store); we
never print it. Without a token or a network the push fails with one line and the local folder is untouched:
uploading only reads it.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from groundup.core.errors import GroundupError

# Training leftovers that do not belong in a model repository.
IGNORE_PATTERNS = ["checkpoint-*/**", "*.pt", "*.bin", ".*", "**/.*", "__pycache__/**"]


def push_folder(folder: str | Path, repo_id: str, private: bool = False, token: str | None = None,
                commit_message: str | None = None) -> str:
    """Create the repository if needed and upload the folder; returns the commit URL."""
    from huggingface_hub import HfApi, get_token

    folder = Path(folder)
    if not folder.is_dir():
        raise GroundupError(f"push: {folder} is not a folder")
    if not (folder / "config.json").is_file() and not (folder / "adapter_config.json").is_file():
        raise GroundupError(f"push: {folder} has no config.json or adapter_config.json; is it a model folder?")
    if "/" not in repo_id:
        raise GroundupError(f"push: repo id {repo_id!r} must look like USER/NAME")
    token = token or get_token()
    if not token:
        raise GroundupError("push: no Hugging Face token found; set HF_TOKEN or run `hf auth login`")
    api = HfApi(token=token)
    try:
        api.create_repo(repo_id, private=private, exist_ok=True, repo_type="model")
        info = api.upload_folder(folder_path=str(folder), repo_id=repo_id, repo_type="model",
                                 commit_message=commit_message or f"Upload {folder.name} with groundup",
                                 ignore_patterns=IGNORE_PATTERNS)
    except Exception as err:  # noqa: BLE001 - network, auth and server errors all deserve one line
        first = str(err).splitlines()[0] if str(err) else ""
        raise GroundupError(f"push to {repo_id} failed ({type(err).__name__}: {first}); "
                            f"{folder} is unchanged") from None
    from groundup.core.provenance import local_adapter_bases

    for file, base in local_adapter_bases(folder).items():
        print(f"note: {file} names its base model by the local path {base}, which does not load from the Hub: "
              "set base_model_name_or_path there to the base's Hub id (see the card's `Base model`)")
    return str(getattr(info, "commit_url", info))


def push_after_stage(folder: str | Path, push: bool, repo_id: str | None, private: bool = False) -> str | None:
    """`push_to_hub: true` in a stage YAML: upload the finished folder. It runs after the atomic save, so a failed
    push (no token, no network) leaves the local folder complete; the error is still one clear line."""
    if not push:
        return None
    if not repo_id:
        raise GroundupError(f"push_to_hub is true but hub_model_id is not set; {folder} is saved locally")
    url = push_folder(folder, repo_id, private=private)
    print(f"pushed {folder} -> {url}")
    return url


def main(argv: list[str] | None = None) -> str:
    parser = argparse.ArgumentParser(prog="groundup push", description=__doc__.splitlines()[0])
    parser.add_argument("folder", help="A model folder (e.g. runs/tiny/dpo).")
    parser.add_argument("--repo-id", "--repo_id", required=True, help="USER/NAME on the Hub.")
    parser.add_argument("--private", action="store_true", help="Create the repository as private.")
    parser.add_argument("--commit-message", "--commit_message", default=None)
    args = parser.parse_args(argv)
    url = push_folder(args.folder, args.repo_id, private=args.private, commit_message=args.commit_message)
    print(f"pushed {args.folder} -> {url}")
    return url
