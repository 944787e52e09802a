"""The clip_similarity template (see model_repository/__init__.py)."""
