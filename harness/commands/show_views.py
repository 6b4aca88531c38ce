"""`harness show-views --dataset D --out sheet.png`: a contact sheet of what the model sees.

Segmentation datasets: the prepared image, its label overlay, one tile with its patch grid
and patch labels, then every corruption level of the paper (blur, noise, band noise on the
whole image; shifts on the tile). FAIR1M: tiles with their rotated boxes, patch ownership,
and the transformed copies. Videos: frames with their boxes and track ids, resized as fed.
"""

from __future__ import annotations

import argparse
import io
import tempfile
from pathlib import Path

import numpy as np

from harness import config
from harness.data import DATASET_NAMES, DEFAULT_SPLITS, open_dataset
from harness.data.subsets import fair1m_ids, video_ids
from harness.data.synthetic import write_world
from harness.io import atomic_write_bytes
from harness.views import LEVELS, Fair1mTileView, TileView, VideoFrameView, corrupt


def register(subparsers) -> None:
    parser = subparsers.add_parser("show-views", help="write a contact sheet of a dataset's views (PNG)")
    parser.add_argument("--dataset", required=True, choices=DATASET_NAMES)
    parser.add_argument("--out", required=True, help="PNG file to write")
    parser.add_argument("--root", help="the dataset's folder (default: <data-root>/<dataset>, else a synthetic one)")
    parser.add_argument("--data-root", help=f"folder holding one folder per dataset (default ${config.DATA_ENV})")
    parser.add_argument("--split", help="split to show (default: the one the claims read last)")
    parser.add_argument("--index", type=int, default=0, help="which sample / tile / video to show")
    parser.add_argument("--patch-size", type=int, default=16, help="patch grid to draw (16, or 14 for DINOv2)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    root = Path(args.root) if args.root else None
    if root is None and config.data_root(args.data_root):
        root = config.data_root(args.data_root) / args.dataset
    with tempfile.TemporaryDirectory() as tmp:
        if root is None:
            print(f"no data root given: showing the synthetic {args.dataset}")
            root = write_world(tmp, names=(args.dataset,)) / args.dataset
        split = args.split or DEFAULT_SPLITS[args.dataset][-1]
        ds = open_dataset(args.dataset, root, split)  # a missing dataset: one line, exit 1
        draw = {"cityscapes": _segmentation, "ade20k": _segmentation, "fair1m": _fair1m,
                "bdd100k_mot": _video, "mot17": _video}[args.dataset]
        figure = draw(ds, args.index, args.patch_size)
        sheet = io.BytesIO()
        figure.savefig(sheet, format=Path(args.out).suffix.lstrip(".") or "png", dpi=80)
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(args.out, sheet.getbuffer())  # an old sheet stays whole until replaced
    print(f"wrote {args.out}")
    return 0


def _figure(rows: int, cols: int, title: str):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(rows, cols, figsize=(4 * cols, 2.6 * rows), squeeze=False)
    fig.suptitle(title)
    for ax in axes.ravel():
        ax.axis("off")
    return fig, axes


def _palette(n: int) -> np.ndarray:
    rng = np.random.default_rng(1)
    colours = rng.integers(0, 256, (256, 3)).astype(np.uint8)
    colours[255] = 0  # ignore shows black
    return colours[: max(n, 256)]


def _thumb(image: np.ndarray, width: int = 640) -> np.ndarray:
    """Full images are shown downsized: the sheet is for looking, and plotting 2 Mpx is slow."""
    from PIL import Image

    if image.shape[1] <= width:
        return image
    height = round(image.shape[0] * width / image.shape[1])
    return np.asarray(Image.fromarray(image).resize((width, height), Image.Resampling.BILINEAR))


def _overlay(image: np.ndarray, labels: np.ndarray) -> np.ndarray:
    return (0.45 * image + 0.55 * _palette(256)[labels]).astype(np.uint8)


def _grid_lines(ax, size: int, patch_size: int) -> None:
    for v in range(0, size + 1, patch_size):
        ax.axhline(v - 0.5, color="white", lw=0.3)
        ax.axvline(v - 0.5, color="white", lw=0.3)


def _segmentation(ds, index: int, patch_size: int):
    sample_id = ds.ids[index % len(ds)]
    is_ade = ds.name == "ade20k"
    params = {"tile": 224, "out": 224, "resize": (448, 672)} if is_ade else {"tile": 256, "out": 224}
    view = TileView(ds, [sample_id], **params)
    fig, axes = _figure(5, 4, f"{ds.name} {sample_id}: {view.tiles_per_image} tiles of {view.tile_size} px -> {view.out} px")
    image, labels = view.image(0), view.labels(0)
    t = view.tiles_per_image // 2  # a tile from the middle of the image
    tile_labels = view.patch_labels(patch_size)[t]
    panels = [(_thumb(image), "prepared image"), (_thumb(_overlay(image, labels)), "labels (black = ignore)"),
              (view[t], f"tile {view.ids[t]}"), (_palette(256)[tile_labels], f"majority label per {patch_size} px patch")]
    for ax, (picture, title) in zip(axes[0], panels, strict=True):
        ax.imshow(picture)
        ax.set_title(title, fontsize=8)
    _grid_lines(axes[0, 2], view.out, patch_size)
    for row, kind in enumerate(("blur", "noise", "band_noise"), start=1):
        for col, level in enumerate(LEVELS[kind]):
            axes[row, col].imshow(_thumb(corrupt(image, kind, level, seed=config.seed_for("show", kind, level))))
            axes[row, col].set_title(f"{kind} {level}", fontsize=8)
    for col, level in enumerate(LEVELS["shift"]):
        shifted = TileView(ds, [sample_id], corruption="shift", level=level, **params)[t]
        axes[4, col].imshow(shifted[:48, :48])
        axes[4, col].set_title(f"shift {level} px (tile corner, zoomed)", fontsize=8)
    return fig


def _fair1m(ds, index: int, patch_size: int):
    tiles = list(fair1m_ids(ds, per_category=1))[index : index + 4]
    view = Fair1mTileView(ds, tiles)
    fig, axes = _figure(4, 4, f"fair1m: {len(tiles)} tiles of {view.out} px")
    owners = view.patch_objects(patch_size)
    for col in range(len(tiles)):
        local, objects = view.instance_map(col)
        axes[0, col].imshow(view[col])
        for obj in objects:
            _, y0, x0 = view.tiles[col]
            corners = np.vstack([obj.polygon, obj.polygon[:1]]) - [x0, y0]
            axes[0, col].plot(corners[:, 0], corners[:, 1], lw=0.8, color="yellow")
        axes[0, col].set_xlim(0, view.out)
        axes[0, col].set_ylim(view.out, 0)
        axes[0, col].set_title(tiles[col], fontsize=8)
        axes[1, col].imshow(_palette(256)[(owners["fine"][col] + 256) % 256])
        axes[1, col].set_title("fine category per patch (black = background)", fontsize=7)
    for row, kind in ((2, "shift"), (3, "blur")):
        for col, level in enumerate(LEVELS[kind]):
            axes[row, col].imshow(Fair1mTileView(ds, tiles[:1], transform=kind, level=level)[0])
            axes[row, col].set_title(f"{kind} {level}", fontsize=8)
    return fig


def _video(ds, index: int, patch_size: int):
    video = video_ids(ds)[index % len(video_ids(ds))]
    view = VideoFrameView(ds, [video])
    frames = np.linspace(0, len(view) - 1, 8).astype(int)
    fig, axes = _figure(2, 4, f"{ds.name} {video}: frames at {view.size[0]}x{view.size[1]}")
    objects = view.frame_objects()
    for ax, f in zip(axes.ravel(), frames, strict=True):
        ax.imshow(view[int(f)])
        for track, category, box in zip(*objects[f], strict=True):
            ax.add_patch(_rectangle(box))
            ax.text(box[0], box[1], f"{track} {category}", fontsize=5, color="yellow")
        ax.set_title(f"frame {view.frame_index[f]}", fontsize=8)
    return fig


def _rectangle(box):
    from matplotlib.patches import Rectangle

    return Rectangle((box[0], box[1]), box[2] - box[0], box[3] - box[1], fill=False, color="yellow", lw=0.8)
