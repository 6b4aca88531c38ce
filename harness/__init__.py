"""vit-local-claims: re-verify the findings of 'Analyzing Local Representations of
Self-supervised Vision Transformers' as a pytest suite."""

__version__ = "0.1.0"
