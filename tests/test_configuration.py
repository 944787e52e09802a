"""One configuration style (configuration.flags): each process's settings are dataclasses whose
fields are flags and environment variables, and serve composes the exporter's settings instead of
retyping them."""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

import pytest

from configuration import flags
from export import cli as export_cli
from export.config import ExportChoice
from export.repository import Settings
from gateway import config as gateway_config
from serve import cli as serve_cli


def test_a_flag_wins_over_the_environment_which_wins_over_the_default() -> None:
    env = {"CLIP_GATEWAY_MAX_LABELS": "7"}
    assert gateway_config.parse(["--max-labels", "5"], env).limits.max_labels == 5
    assert gateway_config.parse([], env).limits.max_labels == 7
    assert gateway_config.parse([], {}).limits.max_labels == 1000
    assert gateway_config.parse([], {}).limits.max_images is None  # taken from the repository


def test_a_flag_in_other_units_sets_the_field_in_its_own() -> None:
    config = export_cli.parse_args(["--label-cache-mb", "3"])
    assert config.choice.settings.label_cache_bytes == 3 << 20
    assert config.choice.settings.token_cache_bytes == Settings().token_cache_bytes  # default untouched


def test_the_exporter_reads_its_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CLIP_EXPORT_TOKEN_CACHE_MB", "5")
    monkeypatch.setenv("CLIP_EXPORT_ALLOW_SLOW_PRECISION", "true")
    settings = export_cli.parse_args([]).choice.settings
    assert settings.token_cache_bytes == 5 << 20
    assert settings.allow_slow_precision is True


def test_choices_are_enforced() -> None:
    with pytest.raises(SystemExit):
        export_cli.parse_args(["--compile", "sometimes"])


def test_serve_takes_every_export_setting_as_its_own() -> None:
    """Composed, not retyped: each flag of ExportChoice is a serve flag, and lands in the same field."""
    export_flags = argparse.ArgumentParser()
    flags.add_flags(export_flags, ExportChoice)
    options = {option for action in export_flags._actions for option in action.option_strings} - {"-h", "--help"}
    serve_flags = argparse.ArgumentParser()
    flags.add_flags(serve_flags, serve_cli.ServeConfig)
    assert options <= {option for action in serve_flags._actions for option in action.option_strings}
    config = serve_cli.parse_args(["--text-instances", "2", "--max-batch-size", "8", "--precision", "fp32"], {})
    assert config.export == ExportChoice(precision="fp32", settings=Settings(text_instances=2, max_batch_size=8))


def test_a_field_of_an_unknown_type_is_refused() -> None:
    @dataclasses.dataclass(frozen=True)
    class Odd:
        names: list[str] = dataclasses.field(default_factory=list)

    with pytest.raises(TypeError, match="settings field"):
        flags.add_flags(argparse.ArgumentParser(), Odd)


def test_serve_exports_again_when_any_export_setting_changes(
    tiny_checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The reuse check compares every setting the export was asked for, not a hand-picked few."""
    from export import checkpoint

    ckpt = checkpoint.resolve(str(tiny_checkpoint))
    out = tmp_path / "repository"
    choice = ExportChoice(model=str(tiny_checkpoint), precision="fp32", settings=Settings(compile="none"))
    serve_cli.ensure_exported(ckpt, out, choice)
    assert "serve: exporting" in capsys.readouterr().err
    serve_cli.ensure_exported(ckpt, out, choice)
    assert "already holds it" in capsys.readouterr().err
    changed = dataclasses.replace(choice, settings=dataclasses.replace(choice.settings, text_batch_size=16))
    serve_cli.ensure_exported(ckpt, out, changed)
    assert "serve: exporting" in capsys.readouterr().err
