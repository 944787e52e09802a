"""What to export and where: the exporter's settings, which `python -m serve` composes as its own."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from clip_contract import precisions
from configuration.flags import setting
from export.repository import Settings

DEFAULT_MODEL = "openai/clip-vit-base-patch16"
DEFAULT_OUT = Path("build/model_repository")
ENV_PREFIX = "CLIP_EXPORT_"


@dataclass(frozen=True)
class ExportChoice:
    """The checkpoint, its precision and the deployment settings: everything an export depends on
    besides where it goes."""

    model: str = setting(DEFAULT_MODEL, help="Hub id or local checkpoint folder")
    precision: str = setting(
        precisions.AUTO,
        choices=(precisions.AUTO, *precisions.NAMES),
        help="auto: what this machine runs fastest (export/hardware.py)",
    )
    settings: Settings = field(default_factory=Settings)


@dataclass(frozen=True)
class ExportConfig:
    choice: ExportChoice = field(default_factory=ExportChoice)
    out: Path = setting(DEFAULT_OUT, help="the repository to write")
    model_name: str | None = setting(
        None, help="the model id clients see", default_text="the Hub id, or a local folder's name"
    )
