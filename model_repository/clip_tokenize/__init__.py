"""The clip_tokenize template (see model_repository/__init__.py)."""
