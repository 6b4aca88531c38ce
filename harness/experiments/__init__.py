"""Experiments: the paper's pipelines from dataset views to measured numbers.

Each module composes views → embeddings → probes/analyses → `Measurement`s for one
section of the paper. They take an `embed(backbone, view, layers)` callable so that the
caller (the claims fixtures, the CLI, a notebook) decides where embeddings are cached.
No pytest here: the claims fixtures call these and cache their results.
"""
