"""The clip_text_encoder template (see model_repository/__init__.py)."""
