"""clip-client: the command line of the clip-serve client.

    clip-client classify cat.jpg dog.png --labels cat dog car [--template "a photo of a {}."] [--top-k 3]
    clip-client embed --image cat.jpg --text "a cat"
    clip-client info
    clip-client similarity cat.jpg --texts "a cat" "a dog"
    clip-client embed-dir photos/ --out photos.parquet [--resume]        (or --out photos.npy)
    clip-client classify-dir photos/ --labels-file labels.txt --out tags.parquet [--top-k 5] [--resume]

--json prints machine-readable output. The server is --target or $CLIP_SERVE_TARGET
(default localhost:50051); an API key comes from --api-key or $CLIP_SERVE_API_KEY.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from clip_client.config import ClientConfig
from clip_client.errors import ClipError, OutputError
from clip_client.images import ImageInput, ImageUrl
from clip_client.sync import ClipClient
from clip_client.types import ClassifyResult, Embeddings, ModelInfo, Similarity


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="clip-client", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--target", default=os.environ.get("CLIP_SERVE_TARGET", "localhost:50051"))
    parser.add_argument("--api-key", default=os.environ.get("CLIP_SERVE_API_KEY"))
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds per call (%(default)s)")
    parser.add_argument("--tls", action="store_true", help="speak TLS (implied by the three options below)")
    parser.add_argument("--ca-file", type=Path, help="PEM CA (or self-signed certificate) to trust")
    parser.add_argument("--cert-file", type=Path, help="PEM client certificate chain (servers that require one)")
    parser.add_argument("--key-file", type=Path, help="PEM private key of --cert-file")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    commands = parser.add_subparsers(dest="command", required=True)
    classify = commands.add_parser("classify", help="rank labels for each image")
    classify.add_argument("images", nargs="+", help="image files, or http(s) URLs for the server to fetch")
    classify.add_argument("--labels", nargs="+", required=True)
    classify.add_argument(
        "--template",
        action="append",
        dest="templates",
        help='prompt template with "{}" (repeatable; default: the server\'s)',
    )
    classify.add_argument("--top-k", type=int, default=5, help="labels shown per image, 0 for all (%(default)s)")
    embed = commands.add_parser("embed", help="embed images and/or texts")
    embed.add_argument("--image", action="append", default=[], dest="images")
    embed.add_argument("--text", action="append", default=[], dest="texts")
    similarity = commands.add_parser("similarity", help="scaled cosine between images and texts")
    similarity.add_argument("images", nargs="+")
    similarity.add_argument("--texts", nargs="+", required=True)
    commands.add_parser("info", help="which model answers, and the server's limits")
    embed_dir = commands.add_parser("embed-dir", help="embed every image under a folder into a Parquet (or .npy) file")
    classify_dir = commands.add_parser("classify-dir", help="classify every image under a folder into a Parquet file")
    for folder in (embed_dir, classify_dir):
        folder.add_argument("folder", type=Path, help="searched recursively for .jpg .jpeg .png .webp .gif .bmp .tif")
        folder.add_argument("--out", type=Path, required=True, help=".parquet, or .npy plus a .parquet index")
        folder.add_argument("--resume", action="store_true", help="continue an interrupted job: skip what --out holds")
        folder.add_argument("--batch-size", type=int, help="images per stream request (client default 8)")
        folder.add_argument("--window", type=int, help="stream requests in flight at once (client default 8)")
    embed_dir.add_argument("--encoding", default="float32", help="how vectors travel (stored as float32)")
    classify_dir.add_argument("--labels-file", type=Path, required=True, help="one label per line (# comments)")
    classify_dir.add_argument("--template", action="append", dest="templates", help='prompt template with "{}"')
    classify_dir.add_argument("--top-k", type=int, default=5, help="labels kept per image (%(default)s)")
    return parser


def _sources(images: Sequence[str]) -> list[ImageInput]:
    """On the command line an http(s):// argument is a URL for the server; anything else a file."""
    return [ImageUrl(image) if image.lower().startswith(("http://", "https://")) else image for image in images]


def _classify_table(result: ClassifyResult, images: Sequence[str]) -> str:
    lines = []
    for name, item in zip(images, result, strict=True):
        lines.append(name)
        if item.error is not None:
            lines.append(f"  error: {item.error}")
            continue
        width = max(len(score.label) for score in item.labels)
        lines.extend(
            f"  {score.label:<{width}}  {score.probability:7.2%}  score {score.score:7.3f}" for score in item.labels
        )
    return "\n".join(lines)


def _classify_json(result: ClassifyResult, images: Sequence[str]) -> Any:
    return {
        "model_id": result.model_id,
        "results": [
            {
                "image": name,
                "error": str(item.error) if item.error else None,
                "labels": [dataclasses.asdict(score) for score in item.labels],
            }
            for name, item in zip(images, result, strict=True)
        ],
    }


def _vectors(matrix: NDArray[np.float32], errors: Mapping[int, ClipError]) -> list[Any]:
    return [
        str(errors[row]) if row in errors else [round(float(x), 6) for x in matrix[row]] for row in range(len(matrix))
    ]


def _embed_json(result: Embeddings) -> Any:
    return {
        "model_id": result.model_id,
        "dimension": result.dimension,
        "images": _vectors(result.images, result.image_errors),
        "texts": _vectors(result.texts, result.text_errors),
    }


def _embed_table(result: Embeddings, images: Sequence[str], texts: Sequence[str]) -> str:
    lines = [f"model {result.model_id}, dimension {result.dimension}"]
    for kind, names, matrix, errors in (
        ("image", images, result.images, result.image_errors),
        ("text", texts, result.texts, result.text_errors),
    ):
        for row, name in enumerate(names):
            shown = (
                f"error: {errors[row]}"
                if row in errors
                else "[" + ", ".join(f"{x:.4f}" for x in matrix[row][:6]) + ", ...]"
            )
            lines.append(f"{kind} {name!r}: {shown}")
    return "\n".join(lines)


def _similarity_output(result: Similarity, images: Sequence[str], texts: Sequence[str], as_json: bool) -> str:
    if as_json:
        return json.dumps(
            {
                "model_id": result.model_id,
                "scale": result.scale,
                "texts": list(texts),
                "rows": [
                    {"image": name, "scores": _vectors(result.scores, result.image_errors)[row]}
                    for row, name in enumerate(images)
                ],
            },
            indent=2,
        )
    lines = []
    for row, name in enumerate(images):
        if row in result.image_errors:
            lines.append(f"{name}: error: {result.image_errors[row]}")
            continue
        lines.append(name)
        lines.extend(f"  {text!r}: {result.scores[row, column]:.3f}" for column, text in enumerate(texts))
    return "\n".join(lines)


def _info_output(info: ModelInfo, as_json: bool) -> str:
    if as_json:
        return json.dumps(dataclasses.asdict(info), indent=2)
    rows = {k: v for k, v in dataclasses.asdict(info).items() if k != "limits"}
    rows.update({f"limit {k}": v for k, v in dataclasses.asdict(info.limits).items()})
    width = max(len(key) for key in rows)
    return "\n".join(f"{key:<{width}}  {value}" for key, value in rows.items())


def _labels(path: Path) -> list[str]:
    lines = (line.strip() for line in path.read_text(encoding="utf-8").splitlines())
    return [line for line in lines if line and not line.startswith("#")]


def _folder_job(client: ClipClient, args: argparse.Namespace) -> str:
    from clip_client.folder_jobs import FolderJob  # needs pyarrow (the bulk extra); the rest does not

    job = FolderJob(
        client,
        args.folder,
        args.out,
        "embed" if args.command == "embed-dir" else "classify",
        resume=args.resume,
        batch_size=args.batch_size,
        window=args.window,
    )
    if args.command == "embed-dir":
        job.encoding = args.encoding
    else:
        job.labels = _labels(args.labels_file)
        job.templates = args.templates
        job.top_k = min(args.top_k, len(job.labels))
    summary = job.run()
    return json.dumps(summary.as_dict(), indent=2) if args.json else summary.text()


def run(argv: Sequence[str] | None = None) -> str:
    args = _parser().parse_args(argv)

    def read(path: Path | None) -> bytes | None:
        return path.read_bytes() if path is not None else None

    config = ClientConfig(
        target=args.target,
        timeout=args.timeout,
        api_key=args.api_key,
        secure=bool(args.tls or args.ca_file or args.cert_file or args.key_file),
        root_certificates=read(args.ca_file),
        client_certificate_chain=read(args.cert_file),
        client_private_key=read(args.key_file),
    )
    with ClipClient(config=config) as client:
        if args.command == "classify":
            top_k = min(args.top_k, len(args.labels))  # "top 5" of 2 labels means both
            result = client.classify(_sources(args.images), args.labels, templates=args.templates, top_k=top_k)
            return (
                json.dumps(_classify_json(result, args.images), indent=2)
                if args.json
                else _classify_table(result, args.images)
            )
        if args.command == "embed":
            embeddings = client.embed(_sources(args.images) or None, args.texts or None)
            return (
                json.dumps(_embed_json(embeddings), indent=2)
                if args.json
                else _embed_table(embeddings, args.images, args.texts)
            )
        if args.command in ("embed-dir", "classify-dir"):
            return _folder_job(client, args)
        if args.command == "similarity":
            similarity = client.similarity(_sources(args.images), args.texts)
            return _similarity_output(similarity, args.images, args.texts, args.json)
        return _info_output(client.model_info(), args.json)


def main(argv: Sequence[str] | None = None) -> int:
    try:
        print(run(argv))
    except (ClipError, OutputError) as error:
        print(f"clip-client: {error}", file=sys.stderr)
        return 1
    except ImportError as error:  # the bulk extra is not installed
        print(f"clip-client: {error}", file=sys.stderr)
        return 2
    except OSError as error:
        print(f"clip-client: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
