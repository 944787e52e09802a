"""The reference every parity test compares with: transformers' CLIPModel + CLIPProcessor."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps
from transformers import CLIPModel, CLIPProcessor


class Reference:
    def __init__(self, checkpoint: Path) -> None:
        self.model = CLIPModel.from_pretrained(str(checkpoint), dtype=torch.float32).eval()
        self.processor = CLIPProcessor.from_pretrained(str(checkpoint))

    @staticmethod
    def open_image(data: bytes) -> Image.Image:
        """How a careful user hands an encoded image to the reference: upright, first frame."""
        return ImageOps.exif_transpose(Image.open(io.BytesIO(data)))

    def pixel_values(self, images: list[Image.Image]) -> np.ndarray:
        return np.asarray(self.processor.image_processor(images, return_tensors="np")["pixel_values"])

    def input_ids(self, texts: list[str]) -> list[list[int]]:
        return self.processor.tokenizer(texts, truncation=True, max_length=77)["input_ids"]

    @torch.no_grad()
    def image_embeds(self, images: list[Image.Image]) -> np.ndarray:
        pixels = torch.from_numpy(self.pixel_values(images))
        features = self.model.get_image_features(pixel_values=pixels)
        features = getattr(features, "pooler_output", features)
        return torch.nn.functional.normalize(features, dim=-1).numpy()

    @torch.no_grad()
    def text_embeds(self, texts: list[str]) -> np.ndarray:
        tokens = self.processor.tokenizer(texts, padding=True, truncation=True, max_length=77, return_tensors="pt")
        features = self.model.get_text_features(**tokens)
        features = getattr(features, "pooler_output", features)
        return torch.nn.functional.normalize(features, dim=-1).numpy()

    @torch.no_grad()
    def logits(self, images: list[Image.Image], texts: list[str]) -> np.ndarray:
        inputs = self.processor(
            text=texts, images=images, padding=True, truncation=True, max_length=77, return_tensors="pt"
        )
        return self.model(**inputs).logits_per_image.numpy()
