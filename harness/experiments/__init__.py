"""Experiments: the paper's pipelines from dataset views to measured numbers.

Each module composes views → embeddings → probes/analyses → `Measurement`s for one
section of the paper. They take an `embed(backbone, view, layers)` callable so that the
caller (the claims fixtures, the CLI, a notebook) decides where embeddings are cached.
No pytest here: the claims fixtures call these and cache their results.

    segmentation.py    S3, S4.1-S4.6 (Cityscapes, ADE20K)
    overlap.py         S4.7
    reconstruction.py  S4.8
    retrieval.py       S5 (FAIR1M)
    association.py     S6 (BDD100K MOT, MOT17)
    common.py          shared pieces, and the one top-m feature set (cityscapes_top_features)
    conventions.py     conventions(profile): the choices the report records
"""

from harness.experiments.conventions import conventions

__all__ = ["conventions"]
