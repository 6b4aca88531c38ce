"""The paper's few-shot subsets, chosen reproducibly from one seed.

Each function returns a `Subset`: a tuple of ids (to record in the report) with `.notes` that
say where the dataset held fewer samples than asked (then all available are taken; this is
how the small synthetic world is handled). Selections are nested: the first k of a per-group
random order, so the 2-per-city set is inside the 4-per-city set, inside the 8-per-city set.

The few-shot *train* subsets also take a `train_seed` (claim X.1 with --train-seeds N: the
same selection rule, N independent draws, still nested); train_seed 0 is the paper run's
draw, the same ids as before train seeds existed. Val subsets never change with it.
"""

from __future__ import annotations

from collections import defaultdict

import numpy as np

from harness.config import ROOT_SEED, rng


class Subset(tuple):
    """Chosen ids, in a fixed order, with notes on any shortfall."""

    notes: tuple[str, ...]

    def __new__(cls, ids, notes=()):
        subset = super().__new__(cls, ids)
        subset.notes = tuple(notes)
        return subset

    def as_record(self) -> dict:
        return {"ids": list(self), "notes": list(self.notes)}


def _rng(seed: int | None, *names: object, train_seed: int = 0) -> np.random.Generator:
    # train_seed 0 adds nothing to the names, so it reproduces the original draw exactly
    extra = ("train_seed", train_seed) if train_seed else ()
    return rng("subset", *names, *extra, root=ROOT_SEED if seed is None else seed)


def _first_k(ids: list[str], k: int | None, generator: np.random.Generator) -> list[str]:
    order = generator.permutation(len(ids))
    return [ids[i] for i in order[: len(ids) if k is None else k]]


def _per_group(ds, per_group: int, seed: int | None, train_seed: int = 0) -> Subset:
    groups: dict[str, list[str]] = defaultdict(list)
    for sample_id in ds.ids:
        groups[ds.group_of(sample_id)].append(sample_id)
    chosen, notes = [], []
    for group in sorted(groups):
        ids = sorted(groups[group])
        if len(ids) < per_group:
            notes.append(f"{ds.name} {ds.split} {group}: {len(ids)} images available, {per_group} asked; took all")
        chosen += _first_k(ids, per_group, _rng(seed, ds.name, ds.split, group, train_seed=train_seed))
    return Subset(chosen, notes)


def cityscapes_train_ids(ds, per_city: int = 4, seed: int | None = None, train_seed: int = 0) -> Subset:
    """k images per train city (k = 2, 4, 8 -> 36, 72, 144 images on the 18 real cities)."""
    return _per_group(ds, per_city, seed, train_seed)


def cityscapes_val_ids(ds, per_city: int = 10, seed: int | None = None) -> Subset:
    """10 images per val city (30 on the 3 real cities)."""
    return _per_group(ds, per_city, seed)


def ade20k_val_ids(ds, n: int = 300, seed: int | None = None) -> Subset:
    ids = sorted(ds.ids)
    notes = [f"ade20k {ds.split}: {len(ids)} images available, {n} asked; took all"] if len(ids) < n else []
    return Subset(_first_k(ids, n, _rng(seed, ds.name, ds.split)), notes)


def ade20k_train_ids(ds, per_class: int = 4, seed: int | None = None, min_fraction: float = 0.001,
                     train_seed: int = 0) -> Subset:
    """`per_class` images for each of the 150 classes (600 in all). Images are visited in a
    seeded random order; an image is taken when it shows (>= min_fraction of its pixels) a
    class that still lacks images, and counts for the one of those with the fewest so far.
    Stops as soon as every class is full, so only part of the training set is read."""
    taken: dict[int, list[str]] = {c: [] for c in range(ds.num_classes)}
    for sample_id in _first_k(sorted(ds.ids), None, _rng(seed, ds.name, ds.split, train_seed=train_seed)):
        counts = np.bincount(ds.labels_of(sample_id).ravel(), minlength=256)[: ds.num_classes]
        wanting = [c for c in np.flatnonzero(counts >= min_fraction * counts.sum()) if len(taken[c]) < per_class]
        if wanting:
            taken[min(wanting, key=lambda c: (len(taken[c]), c))].append(sample_id)
        if all(len(v) == per_class for v in taken.values()):
            break
    short = [ds.class_names[c] for c, v in taken.items() if len(v) < per_class]
    notes = [f"ade20k {ds.split}: fewer than {per_class} images for {len(short)} classes ({', '.join(short[:10])}"
             f"{', ...' if len(short) > 10 else ''}); took all found"] if short else []
    return Subset([s for c in sorted(taken) for s in taken[c]], notes)


def fair1m_ids(ds, per_category: int = 8, seed: int | None = None, out: int = 224) -> Subset:
    """Tile ids '<sample id>@<y0>,<x0>' (see views.Fair1mTileView): `per_category` out x out
    tiles per fine category (296 for 37 x 8; the paper has 295), each centred on an object of
    its category. Rare categories choose first; a tile never overlaps another chosen tile of
    the same image, so each object instance belongs to one tile only, as in the paper."""
    # one pass over the label files, keeping only each object's centre (not the labels)
    candidates: dict[int, list[tuple[int, int, int]]] = defaultdict(list)  # category -> (sample, y0, x0)
    for i in range(len(ds)):
        label = ds.label(i)
        for obj in label.objects:
            candidates[obj.fine_index].append((i, *_centred_origin(label, obj.polygon, out)))
    chosen: dict[int, list[tuple[int, int]]] = defaultdict(list)  # sample -> chosen tile origins
    tiles: dict[int, list[str]] = {}
    for category in sorted(range(ds.num_classes), key=lambda c: (len(candidates[c]), c)):
        pool = candidates[category]
        tiles[category] = []
        for k in _rng(seed, ds.name, ds.split, ds.class_names[category]).permutation(len(pool)):
            if len(tiles[category]) == per_category:
                break
            i, y0, x0 = pool[k]
            if any(abs(y0 - y) < out and abs(x0 - x) < out for y, x in chosen[i]):
                continue
            chosen[i].append((y0, x0))
            tiles[category].append(f"{ds.ids[i]}@{y0},{x0}")
    short = [f"{ds.class_names[c]} ({len(v)})" for c, v in tiles.items() if len(v) < per_category]
    notes = [f"fair1m {ds.split}: fewer than {per_category} tiles for {', '.join(short)}"] if short else []
    return Subset([t for c in range(ds.num_classes) for t in tiles[c]], notes)


def _centred_origin(label, polygon: np.ndarray, out: int) -> tuple[int, int]:
    cx, cy = polygon.mean(axis=0)
    y0 = int(np.clip(round(cy - out / 2), 0, max(label.height - out, 0)))
    x0 = int(np.clip(round(cx - out / 2), 0, max(label.width - out, 0)))
    return y0, x0


def video_ids(ds, n: int | None = None, seed: int | None = None) -> Subset:
    """Videos to use (default all). MOT17 ships each train sequence three times (DPM, FRCNN,
    SDP: same frames, same gt); one copy per sequence is kept, FRCNN when present."""
    videos = sorted(ds.videos)
    if ds.name == "mot17":
        by_sequence: dict[str, list[str]] = defaultdict(list)
        for video in videos:
            by_sequence[video.rsplit("-", 1)[0]].append(video)
        videos = [next((v for v in copies if v.endswith("-FRCNN")), copies[0]) for _, copies in sorted(by_sequence.items())]
    if n is None:
        return Subset(videos)
    notes = [f"{ds.name} {ds.split}: {len(videos)} videos available, {n} asked; took all"] if len(videos) < n else []
    return Subset(sorted(_first_k(videos, n, _rng(seed, ds.name, ds.split))), notes)
