"""The clip_image_encoder template (see model_repository/__init__.py)."""
