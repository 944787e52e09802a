"""Find a CLIP checkpoint (a Hub id or a local folder in the Hub's layout) and describe it."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")
TOKENIZER_FILES = ("vocab.json", "merges.txt", "tokenizer_config.json", "special_tokens_map.json", "tokenizer.json")
# A checkpoint folder that holds this file is one of the project's own demo models.
DEMO_MARKER = "clip_serve_demo.json"


class CheckpointError(RuntimeError):
    """The checkpoint cannot be had or is incomplete; the message says what is missing."""


@dataclass(frozen=True)
class Checkpoint:
    folder: Path
    model_id: str  # the Hub id, or a name for a local checkpoint (its folder's name): never a path
    revision: str  # the Hub commit, or "local"
    weights_file: Path

    @property
    def is_demo(self) -> bool:
        return (self.folder / DEMO_MARKER).is_file()

    def weights_sha256(self) -> str:
        digest = hashlib.sha256()
        with self.weights_file.open("rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
        return digest.hexdigest()

    def preprocessor_config(self) -> dict[str, object]:
        path = self.folder / "preprocessor_config.json"
        return json.loads(path.read_text()) if path.is_file() else {}


def resolve(source: str, name: str | None = None) -> Checkpoint:
    """A local folder is used as it is; anything else is a Hub id fetched into the HF cache.
    `name`: the model id clients see (default: the Hub id, or the local folder's name; a server's
    filesystem path is never shown to clients)."""
    folder = Path(source).expanduser()
    if folder.is_dir():
        folder = folder.resolve()
        return _describe(folder, model_id=name or folder.name, revision="local")
    checkpoint = _from_hub(source)
    return (
        checkpoint
        if name is None
        else Checkpoint(checkpoint.folder, name, checkpoint.revision, checkpoint.weights_file)
    )


def _from_hub(model_id: str) -> Checkpoint:
    from huggingface_hub import snapshot_download

    patterns = ["*.json", "*.txt", "*.safetensors"]
    try:
        folder = Path(snapshot_download(model_id, allow_patterns=patterns))
    except Exception as error:  # offline, unknown id, gated repo: all mean "cannot be had here"
        raise CheckpointError(
            f"cannot get {model_id!r} from the Hugging Face Hub or its local cache: {error}"
        ) from error
    # snapshot folders are named after the commit they hold
    return _describe(folder, model_id=model_id, revision=folder.name)


def _describe(folder: Path, model_id: str, revision: str) -> Checkpoint:
    if not (folder / "config.json").is_file():
        raise CheckpointError(f"{folder} has no config.json: not a checkpoint in the Hub layout")
    weights = next((folder / name for name in WEIGHT_FILES if (folder / name).is_file()), None)
    if weights is None:
        raise CheckpointError(f"{folder} has none of the weight files {', '.join(WEIGHT_FILES)}")
    if not (folder / "vocab.json").is_file() or not (folder / "merges.txt").is_file():
        raise CheckpointError(f"{folder} lacks the tokenizer files vocab.json and merges.txt")
    return Checkpoint(folder=folder, model_id=model_id, revision=revision, weights_file=weights)
