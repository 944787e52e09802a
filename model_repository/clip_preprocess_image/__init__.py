"""The clip_preprocess_image template (see model_repository/__init__.py)."""
