"""A synthetic world written in the five native layouts, read by the real readers.

`write_world(out, seed)` writes `out/<name>/` for every name in DATASET_NAMES in a few
seconds (size 'smoke'); `write_world(out, seed, size="paper", limit=N, jobs=J)` writes the
paper's image sizes and counts (PAPER_WORLD), or a slice of them, so that `harness plan`
can be checked against a measured run. Images carry structure a ViT can use: each class is a region of its own colour and
texture (stripes at a class-specific angle and period over a smooth base), street scenes are
laid out like street scenes, aerial objects are rotated boxes textured by fine category with
colours shared within a supercategory, and tracked objects move smoothly with a texture of
their own. Everything derives from `seed`.

Every file is written atomically (harness.io), and `ensure_world` writes the whole world
into a temp folder, puts the `.complete` marker in last and renames the folder into place:
a world killed half way (SIGKILL, a full disk) is never taken for a whole one.
"""

from __future__ import annotations

import functools
import io
import json
import shutil
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from harness.config import seed_for
from harness.io import atomic_write_bytes, atomic_write_text, remove_temp_files, temp_sibling

from .ade20k import CLASS_NAMES as ADE_CLASSES
from .common import DATASET_NAMES
from .fair1m import CLASS_NAMES as FAIR1M_CLASSES
from .fair1m import SUPER_INDEX, SUPER_OF

TEXTURE = 64  # texture tile side; class textures repeat with this period


@dataclass(frozen=True)
class MotSequence:
    name: str
    frames: int
    width: int
    height: int
    fps: float


@dataclass(frozen=True)
class WorldSize:
    city_train: tuple[str, ...] = ("aachen", "bochum", "bremen")
    city_val: tuple[str, ...] = ("frankfurt",)
    city_train_per_city: int = 8
    city_val_per_city: int = 3
    ade_train: int = 20
    ade_val: int = 8
    ade_height: tuple[int, int] = (300, 520)  # range of image heights (ADE20K's sizes vary)
    ade_width: tuple[int, int] = (400, 700)
    ade_every_class: bool = False  # one more object per image, cycling through all 150 classes
    fair1m_train: int = 8
    fair1m_val: int = 2
    fair1m_per_category: int = 3  # train objects of each fine category
    fair1m_size: int = 1000  # side of the (square) aerial images
    fair1m_written: int | None = None  # a slice: only the first train images (None: all)
    bdd_videos: int = 2
    mot_sequences: tuple[MotSequence, ...] = (MotSequence("MOT17-02-FRCNN", 40, 960, 540, 30),
                                              MotSequence("MOT17-04-FRCNN", 40, 960, 540, 30))
    frames: int = 40  # frames per BDD100K video

    def limited(self, limit: int | None) -> WorldSize:
        """A slice: at most `limit` images per city and split, ADE20K images per split,
        FAIR1M images, videos, sequences and frames per video or sequence (sizes kept)."""
        if limit is None:
            return self
        if limit < 1:
            raise ValueError(f"limit must be a positive number, got {limit}")
        cap = functools.partial(min, limit)
        return replace(
            self, city_train_per_city=cap(self.city_train_per_city), city_val_per_city=cap(self.city_val_per_city),
            ade_train=cap(self.ade_train), ade_val=cap(self.ade_val), fair1m_written=cap(self.fair1m_train),
            fair1m_val=cap(self.fair1m_val), bdd_videos=cap(self.bdd_videos), frames=cap(self.frames),
            mot_sequences=tuple(replace(q, frames=cap(q.frames)) for q in self.mot_sequences[:limit]))


# The paper's scale (shared/CLAIMS.md "Setup"; the datasets' own sizes): Cityscapes' 18 train
# and 3 val cities at 1024x2048, 8 train images per city (the largest subset) and 10 val;
# ADE20K images of its typical sizes, enough to fill 4 train images for each of the 150
# classes, and 300 val; FAIR1M aerial images of 2000 px holding 10 objects of each of the
# 37 fine categories (the claims take 8); BDD100K MOT val's 200 videos of 200 frames
# (40 s at 5 fps) at 1280x720; MOT17's seven train sequences with their lengths, sizes and
# frame rates.
PAPER_WORLD = WorldSize(
    city_train=("aachen", "bochum", "bremen", "cologne", "darmstadt", "dusseldorf", "erfurt", "hamburg",
                "hanover", "jena", "krefeld", "monchengladbach", "strasbourg", "stuttgart", "tubingen", "ulm",
                "weimar", "zurich"),
    city_val=("frankfurt", "lindau", "munster"),
    city_train_per_city=8, city_val_per_city=10,
    ade_train=900, ade_val=300, ade_height=(384, 768), ade_width=(512, 1024), ade_every_class=True,
    fair1m_train=6, fair1m_val=2, fair1m_per_category=10, fair1m_size=2000,
    bdd_videos=200, frames=200,
    mot_sequences=(MotSequence("MOT17-02-FRCNN", 600, 1920, 1080, 30), MotSequence("MOT17-04-FRCNN", 1050, 1920, 1080, 30),
                   MotSequence("MOT17-05-FRCNN", 837, 640, 480, 14), MotSequence("MOT17-09-FRCNN", 525, 1920, 1080, 30),
                   MotSequence("MOT17-10-FRCNN", 654, 1920, 1080, 30), MotSequence("MOT17-11-FRCNN", 900, 1920, 1080, 30),
                   MotSequence("MOT17-13-FRCNN", 750, 1920, 1080, 25)),
)
SIZES = {"smoke": WorldSize(), "paper": PAPER_WORLD}


def write_world(out: str | Path, seed: int = 0, size: str | WorldSize = "smoke", names: Sequence[str] = DATASET_NAMES,
                limit: int | None = None, jobs: int = 1) -> Path:
    """Write the synthetic world (or only the datasets in `names`) under `out`; returns `out`.
    `size`: 'smoke' (seconds), 'paper' (the paper's sizes and counts: large, see
    PAPER_WORLD) or a WorldSize; `limit` keeps a slice of it (WorldSize.limited); `jobs` > 1
    writes independent parts (a city, a video, ...) in that many processes. The bytes
    written do not depend on `jobs`."""
    if not isinstance(size, WorldSize) and size not in SIZES:
        raise ValueError(f"unknown world size {size!r}; expected one of {tuple(SIZES)}")
    unknown = set(names) - set(DATASET_NAMES)
    if unknown:
        raise ValueError(f"unknown dataset(s) {sorted(unknown)}; expected names from {DATASET_NAMES}")
    planners = {"cityscapes": _cityscapes_parts, "ade20k": _ade20k_parts, "fair1m": _fair1m_parts,
                "bdd100k_mot": _bdd100k_parts, "mot17": _mot17_parts}
    out, spec = Path(out), (size if isinstance(size, WorldSize) else SIZES[size]).limited(limit)
    parts = [part for name in names for part in planners[name](out / name, spec, seed)]
    if jobs > 1 and len(parts) > 1:
        with ProcessPoolExecutor(max_workers=jobs) as pool:
            for done in pool.map(_write_part, parts):
                del done
    else:
        for part in parts:
            _write_part(part)
    return out


def _write_part(part: tuple) -> None:
    writer, *args = part
    writer(*args)


COMPLETE_MARKER = ".complete"


def ensure_world(cache_dir: str | Path, seed: int = 0) -> Path:
    """The synthetic world under `<cache_dir>/synthetic-world/seed<seed>/`, written once.

    A file lock makes parallel processes wait for the first writer. The world is written
    into a temp folder next to it, the marker last, and renamed into place, so the folder
    either holds a whole world or does not exist; a folder without the marker (a world an
    older harness was killed writing) and the temp folders of killed writers are removed
    and the world written again."""
    from filelock import FileLock

    world = Path(cache_dir) / "synthetic-world" / f"seed{seed}"
    world.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(world) + ".lock"):
        if (world / COMPLETE_MARKER).is_file():
            return world
        # Under the lock, every temp folder of this world is from a writer that was killed.
        remove_temp_files(world.parent, world.name, only_dead=False)
        if world.exists():
            shutil.rmtree(world)
        temp = temp_sibling(world)
        try:
            write_world(temp, seed=seed)
            atomic_write_text(temp / COMPLETE_MARKER, "ok\n")
            temp.rename(world)
        except BaseException:
            shutil.rmtree(temp, ignore_errors=True)
            raise
    return world


def _rng(*names: object) -> np.random.Generator:
    return np.random.default_rng(seed_for("synthetic", *names))


# ---------------------------------------------------------------------------- textures
def _texture(rng: np.random.Generator, colour: np.ndarray, contrast: float = 40.0) -> np.ndarray:
    """One 64x64 tile: a colour, stripes at a random angle and period, and fine grain."""
    y, x = np.mgrid[0:TEXTURE, 0:TEXTURE].astype(np.float32)
    # periods divide 64 so the tile repeats seamlessly
    fy, fx = rng.choice([0, 1, 2, 4, 8], size=2, replace=False) if rng.random() < 0.9 else (0, 0)
    stripes = np.sin(2 * np.pi * (fy * y + fx * x) / TEXTURE + rng.uniform(0, 2 * np.pi))
    grain = rng.normal(0, 0.35, (TEXTURE, TEXTURE))
    pattern = (contrast * (0.7 * stripes + grain))[..., None] * rng.uniform(0.6, 1.0, 3)
    return np.clip(colour + pattern, 0, 255).astype(np.uint8)


def _bank(n: int, rng: np.random.Generator, colours: np.ndarray | None = None) -> np.ndarray:
    """[n, 64, 64, 3] textures, one per class, with well-spread colours unless given."""
    if colours is None:
        hues = (np.arange(n) * 0.618034) % 1.0  # golden-ratio hues stay apart
        colours = np.stack([_hsv(h, rng.uniform(0.35, 0.8), rng.uniform(0.35, 0.85)) for h in hues])
    return np.stack([_texture(rng, colours[i]) for i in range(n)])


def _hsv(h: float, s: float, v: float) -> np.ndarray:
    rgb = np.clip(np.abs((h * 6 + np.array([0, 4, 2])) % 6 - 3) - 1, 0, 1)
    return 255 * v * (1 - s + s * rgb)


def _paint(class_map: np.ndarray, bank: np.ndarray) -> np.ndarray:
    """Pixels of each class from its texture tile."""
    height, width = class_map.shape
    ys = (np.arange(height) % TEXTURE)[:, None]
    xs = (np.arange(width) % TEXTURE)[None, :]
    return bank[class_map, ys, xs]


def _save_image(array: np.ndarray, path: Path, **options) -> None:
    """Encode in memory, then write atomically: a reader never sees half an image."""
    encoded = io.BytesIO()
    Image.fromarray(array).save(encoded, format=Image.registered_extensions()[path.suffix], **options)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, encoded.getbuffer())


def _save_png(array: np.ndarray, path: Path) -> None:
    _save_image(array, path, compress_level=1)


def _save_text(text: str, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, text)


# ---------------------------------------------------------------------------- street scenes
def _street_labels(rng: np.random.Generator, height: int, width: int, objects: bool = True) -> np.ndarray:
    """A Cityscapes labelId map: sky, buildings, vegetation, road in perspective, sidewalks,
    poles with signs and lights, and (if `objects`) vehicles and people."""
    canvas = Image.new("L", (width, height), 23)  # sky
    draw = ImageDraw.Draw(canvas)
    sy = height / 1024
    horizon = int(rng.uniform(380, 480) * sy)
    x = 0
    while x < width:  # a row of buildings with gaps of trees, walls or fences
        w = int(rng.uniform(0.07, 0.2) * width)
        kind = rng.choice([11, 11, 11, 21, 12, 13])
        top = int(rng.uniform(0.08, 0.35) * height) if kind == 11 else int(horizon - rng.uniform(0.05, 0.2) * height)
        if kind == 21:
            draw.ellipse([x - w // 4, top, x + w + w // 4, horizon + int(0.1 * height)], fill=21)
        else:
            draw.rectangle([x, top, x + w, horizon + int(0.06 * height)], fill=int(kind))
        x += w
    vanish_l, vanish_r = width * rng.uniform(0.38, 0.45), width * rng.uniform(0.55, 0.62)
    road_top = horizon + int(0.04 * height)
    draw.polygon([(0, height), (width, height), (vanish_r, road_top), (vanish_l, road_top)], fill=7)
    draw.polygon([(0, road_top + int(0.1 * height)), (vanish_l, road_top), (0, height * 0.85)], fill=8)
    draw.polygon([(width, road_top + int(0.1 * height)), (vanish_r, road_top), (width, height * 0.85)], fill=8)
    for _ in range(int(rng.integers(1, 3))):  # grass strips
        x0 = rng.uniform(0, 0.25) * width * rng.choice([1, 3])
        draw.rectangle([x0, road_top + 0.06 * height, x0 + 0.08 * width, road_top + 0.1 * height], fill=22)
    if rng.random() < 0.5:  # a parking bay (an ignored class)
        draw.rectangle([width * 0.8, height * 0.62, width * 0.95, height * 0.7], fill=9)
    for _ in range(int(rng.integers(2, 5))):  # poles with a sign or a light
        px = int(rng.uniform(0.02, 0.98) * width)
        pw = max(2, int(0.006 * width))
        ptop = int(horizon - rng.uniform(0.1, 0.25) * height)
        draw.rectangle([px, ptop, px + pw, road_top + int(0.15 * height)], fill=17)
        sign = int(rng.choice([19, 20]))
        draw.rectangle([px - 3 * pw, ptop, px + 4 * pw, ptop + int(0.05 * height)], fill=sign)
    if objects:
        _street_objects(draw, rng, width, height, road_top)
    if rng.random() < 0.5:  # the ego vehicle's bonnet (ignored)
        draw.rectangle([0, int(0.94 * height), width, height], fill=1)
    return np.asarray(canvas)


def _street_objects(draw: ImageDraw.ImageDraw, rng: np.random.Generator, width: int, height: int, road_top: int) -> None:
    items = [(26, 4, 1.9, 1.0), (27, 1, 1.6, 1.4), (28, 1, 2.4, 1.5), (31, 0.3, 4.0, 1.4), (24, 3, 0.4, 1.8),
             (25, 1, 0.45, 1.7), (32, 0.6, 1.2, 0.9), (33, 0.8, 1.0, 0.8)]  # labelId, mean count, w/h ratio, height
    placed = []
    for label_id, mean, aspect, size in items:
        placed += [(label_id, aspect, size)] * int(rng.poisson(mean))
    depth = rng.uniform(0.1, 1.0, len(placed))
    for k in np.argsort(depth):  # far first, near ones drawn on top
        label_id, aspect, size = placed[k]
        bottom = road_top + depth[k] * (height - road_top) * 0.9
        h = size * (0.03 + 0.13 * depth[k]) * height
        cx = rng.uniform(0.05, 0.95) * width
        box = [cx - aspect * h / 2, bottom - h, cx + aspect * h / 2, bottom]
        draw.rectangle(box, fill=label_id)
        if label_id == 25:  # a rider sits on a bicycle
            draw.rectangle([box[0] - h * 0.2, bottom - h * 0.4, box[2] + h * 0.2, bottom + h * 0.1], fill=33)


def _cityscapes_parts(root: Path, spec: WorldSize, seed: int) -> list[tuple]:
    return [(_write_city, root, split, city, n, seed)
            for split, cities, n in (("train", spec.city_train, spec.city_train_per_city),
                                     ("val", spec.city_val, spec.city_val_per_city))
            for city in cities]


def _write_city(root: Path, split: str, city: str, n: int, seed: int) -> None:
    bank = _bank(34, _rng(seed, "cityscapes", "textures"))
    for frame in range(n):
        rng = _rng(seed, "cityscapes", split, city, frame)
        labels = _street_labels(rng, 1024, 2048)
        image = _shade(_paint(labels, bank), rng)
        stem = f"{city}_{frame:06d}_{19 + frame:06d}"
        _save_png(image, root / "leftImg8bit" / split / city / f"{stem}_leftImg8bit.png")
        _save_png(labels, root / "gtFine" / split / city / f"{stem}_gtFine_labelIds.png")


def _shade(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A per-image exposure and a soft left-right light gradient."""
    gain = rng.uniform(0.85, 1.15) * np.linspace(rng.uniform(0.9, 1.0), rng.uniform(1.0, 1.1), image.shape[1])
    return np.clip(image * gain[None, :, None], 0, 255).astype(np.uint8)


# ---------------------------------------------------------------------------- ADE20K
_ADE_INDOOR = ("wall", "floor", "ceiling", "bed", "windowpane", "cabinet", "door", "table", "curtain",
               "chair", "painting", "sofa", "shelf", "mirror", "rug", "lamp", "cushion", "box", "pillow", "book")
_ADE_OUTDOOR = ("sky", "building", "road", "tree", "grass", "sidewalk", "person", "car", "mountain",
                "plant", "fence", "signboard", "streetlight", "bus", "pole", "bicycle")


def _ade_labels(rng: np.random.Generator, height: int, width: int, extra: int | None = None) -> np.ndarray:
    """An ADE mask (0 = other, 1..150): a backdrop of three stuff regions and some objects;
    with `extra` (a class index) one more object of that class, drawn last."""
    value = {name: ADE_CLASSES.index(name) + 1 for name in ADE_CLASSES}
    indoor = rng.random() < 0.5
    top, middle, bottom = ("ceiling", "wall", "floor") if indoor else ("sky", rng.choice(["building", "mountain"]), rng.choice(["road", "grass"]))
    canvas = Image.new("L", (width, height), value[str(middle)])
    draw = ImageDraw.Draw(canvas)
    draw.rectangle([0, 0, width, rng.uniform(0.15, 0.3) * height], fill=value[str(top)])
    draw.rectangle([0, rng.uniform(0.65, 0.8) * height, width, height], fill=value[str(bottom)])
    pool = [n for n in (_ADE_INDOOR if indoor else _ADE_OUTDOOR)[3:]]
    for name in rng.choice(pool, size=int(rng.integers(3, 7)), replace=False):
        w, h = rng.uniform(0.1, 0.35) * width, rng.uniform(0.1, 0.4) * height
        x0, y0 = rng.uniform(0, width - w), rng.uniform(0.2 * height, height - h)
        shape = draw.ellipse if rng.random() < 0.3 else draw.rectangle
        shape([x0, y0, x0 + w, y0 + h], fill=value[str(name)])
    if rng.random() < 0.6:  # an unlabeled ("other") object
        x0, y0 = rng.uniform(0, 0.8) * width, rng.uniform(0.3, 0.8) * height
        draw.rectangle([x0, y0, x0 + 0.12 * width, y0 + 0.12 * height], fill=0)
    if extra is not None:
        w, h = rng.uniform(0.15, 0.3) * width, rng.uniform(0.15, 0.3) * height
        x0, y0 = rng.uniform(0, width - w), rng.uniform(0, height - h)
        draw.rectangle([x0, y0, x0 + w, y0 + h], fill=int(extra) + 1)
    return np.asarray(canvas)


ADE_PART = 100  # images per part written in one process


def _ade20k_parts(root: Path, spec: WorldSize, seed: int) -> list[tuple]:
    return [(_write_ade_images, root, split, first, min(first + ADE_PART - 1, n), spec, seed)
            for split, n in (("train", spec.ade_train), ("val", spec.ade_val))
            for first in range(1, n + 1, ADE_PART)]


def _write_ade_images(root: Path, split: str, first: int, last: int, spec: WorldSize, seed: int) -> None:
    bank = _bank(151, _rng(seed, "ade20k", "textures"))
    base = root / "ADEChallengeData2016"
    folder, prefix = {"train": ("training", "ADE_train"), "val": ("validation", "ADE_val")}[split]
    for k in range(first, last + 1):
        rng = _rng(seed, "ade20k", split, k)
        height, width = int(rng.integers(*spec.ade_height)), int(rng.integers(*spec.ade_width))
        labels = _ade_labels(rng, height, width, (k - 1) % len(ADE_CLASSES) if spec.ade_every_class else None)
        image = _shade(_paint(labels, bank), rng)
        _save_image(image, base / "images" / folder / f"{prefix}_{k:08d}.jpg", quality=92)
        _save_png(labels, base / "annotations" / folder / f"{prefix}_{k:08d}.png")


# ---------------------------------------------------------------------------- FAIR1M
# long side range (px) and width/length ratio of each supercategory's rotated boxes
_FAIR1M_SHAPES = {"Airplane": (50, 80, 0.9), "Ship": (40, 90, 0.25), "Vehicle": (20, 32, 0.5),
                  "Court": (60, 100, 0.6), "Road": (80, 110, 0.8)}
_FAIR1M_XML = """<?xml version="1.0" encoding="utf-8"?>
<annotation>
\t<source>
\t\t<filename>{name}.tif</filename>
\t\t<origin>GF2/GF3</origin>
\t</source>
\t<research>
\t\t<version>1.0</version>
\t\t<provider>FAIR1M</provider>
\t\t<author>Cyber</author>
\t\t<pluginname>FAIR1M</pluginname>
\t\t<pluginclass>object detection</pluginclass>
\t\t<time>2021-07-21</time>
\t</research>
\t<size>
\t\t<width>{width}</width>
\t\t<height>{height}</height>
\t\t<depth>3</depth>
\t</size>
\t<objects>
{objects}\t</objects>
</annotation>
"""
_FAIR1M_OBJECT = """\t\t<object>
\t\t\t<coordinate>pixel</coordinate>
\t\t\t<type>rectangle</type>
\t\t\t<description>None</description>
\t\t\t<possibleresult>
\t\t\t\t<name>{name}</name>
\t\t\t</possibleresult>
\t\t\t<points>
{points}\t\t\t</points>
\t\t</object>
"""


def _fair1m_bank(rng: np.random.Generator) -> np.ndarray:
    """Fine categories of one supercategory share a hue and differ in shade and pattern."""
    colours = []
    for fine in FAIR1M_CLASSES:
        hue = SUPER_INDEX[SUPER_OF[fine]] / len(SUPER_INDEX)
        colours.append(_hsv(hue + rng.uniform(-0.04, 0.04), rng.uniform(0.4, 0.9), rng.uniform(0.45, 0.95)))
    return _bank(len(FAIR1M_CLASSES), rng, np.stack(colours))


def _rotated_box(cx: float, cy: float, length: float, width: float, angle: float) -> np.ndarray:
    c, s = np.cos(angle), np.sin(angle)
    corners = np.array([[length, width], [-length, width], [-length, -width], [length, -width]]) / 2
    return corners @ np.array([[c, s], [-s, c]]) + [cx, cy]


def _aerial_background(rng: np.random.Generator, size: int) -> np.ndarray:
    coarse = rng.uniform([60, 70, 50], [140, 140, 110], (8, 8, 3)).astype(np.uint8)
    base = np.asarray(Image.fromarray(coarse).resize((size, size), Image.Resampling.BICUBIC)).astype(np.float32)
    return np.clip(base + rng.normal(0, 6, (size, size, 1)), 0, 255).astype(np.uint8)


def _fair1m_parts(root: Path, spec: WorldSize, seed: int) -> list[tuple]:
    # one object near the centre of a 250 px cell: a 224 px tile centred on any object never
    # overlaps the tile of another, so every object can have a tile of its own
    train_categories = np.repeat(np.arange(len(FAIR1M_CLASSES)), spec.fair1m_per_category)
    _rng(seed, "fair1m", "assign").shuffle(train_categories)
    written = spec.fair1m_train if spec.fair1m_written is None else spec.fair1m_written
    # a slice's images hold the objects they hold in the whole world
    plans = {("train", k): train_categories[k::spec.fair1m_train] for k in range(written)}
    for k in range(spec.fair1m_val):
        plans[("val", k)] = _rng(seed, "fair1m", "val", k).choice(len(FAIR1M_CLASSES), 12, replace=False)
    return [(_write_fair1m_image, root, split, k, categories, spec.fair1m_size, seed)
            for (split, k), categories in plans.items()]


def _write_fair1m_image(root: Path, split: str, k: int, categories: np.ndarray, size: int, seed: int) -> None:
    bank = _fair1m_bank(_rng(seed, "fair1m", "textures"))
    cell = 250
    if len(categories) > (size // cell) ** 2:
        raise ValueError(f"{len(categories)} objects do not fit a {size} px image's {(size // cell) ** 2} cells")
    rng = _rng(seed, "fair1m", split, k)
    image = _aerial_background(rng, size)
    class_map = Image.new("L", (size, size), 0)
    draw = ImageDraw.Draw(class_map)
    cells = rng.choice((size // cell) ** 2, len(categories), replace=False)
    xml_objects = []
    for category, c in zip(categories, cells, strict=True):
        low, high, ratio = _FAIR1M_SHAPES[SUPER_OF[FAIR1M_CLASSES[category]]]
        length = rng.uniform(low, high)
        cx, cy = (c % (size // cell) + 0.5) * cell + rng.uniform(-5, 5), (c // (size // cell) + 0.5) * cell + rng.uniform(-5, 5)
        corners = _rotated_box(cx, cy, length, length * ratio, rng.uniform(0, np.pi))
        draw.polygon([tuple(p) for p in corners.tolist()], fill=int(category) + 1)
        points = "".join(f"\t\t\t\t<point>{x:.6f},{y:.6f}</point>\n" for x, y in np.vstack([corners, corners[:1]]).tolist())
        xml_objects.append(_FAIR1M_OBJECT.format(name=FAIR1M_CLASSES[category], points=points))
    owner = np.asarray(class_map)
    painted = _paint(np.maximum(owner.astype(np.int64) - 1, 0), bank)
    image = np.where(owner[..., None] > 0, painted, image)
    split_dir = root / ("train/part1" if split == "train" else "validation")
    _save_image(image, split_dir / "images" / f"{k}.tif")
    xml = _FAIR1M_XML.format(name=k, width=size, height=size, objects="".join(xml_objects))
    _save_text(xml, split_dir / "labelXml" / f"{k}.xml")


# ---------------------------------------------------------------------------- videos
@dataclass
class _Track:
    track_id: int
    category: str
    texture: np.ndarray
    start: np.ndarray  # x, y of the box centre at frame 0
    velocity: np.ndarray  # px per frame
    size: np.ndarray  # w, h
    wobble: float  # amplitude of a slow vertical sway

    def box(self, t: int) -> np.ndarray:
        cx, cy = self.start + self.velocity * t + [0, self.wobble * np.sin(t / 6)]
        w, h = self.size
        return np.array([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2])


def _render(background: np.ndarray, tracks: list[_Track], t: int, pan: int, width: int) -> tuple[np.ndarray, list]:
    """One `width`-wide frame: the background panned by `pan` px and the tracks drawn far to
    near. Returns the frame and (track, box clipped to the frame, truncated) for visible tracks."""
    height = background.shape[0]
    frame = background[:, pan : pan + width].copy()
    visible = []
    for track in sorted(tracks, key=lambda tr: tr.box(t)[3]):
        box = track.box(t)
        x1, y1, x2, y2 = np.clip(np.rint(box), 0, [width, height, width, height]).astype(int)
        if x2 - x1 < 2 or y2 - y1 < 2:
            continue
        reps = (int(np.ceil((y2 - y1) / TEXTURE)), int(np.ceil((x2 - x1) / TEXTURE)), 1)
        frame[y1:y2, x1:x2] = np.tile(track.texture, reps)[: y2 - y1, : x2 - x1]
        frame[y1:y2, [x1, x2 - 1]] = 30  # a dark outline, as objects have edges
        frame[[y1, y2 - 1], x1:x2] = 30
        truncated = bool((np.rint(box) != [x1, y1, x2, y2]).any())
        visible.append((track, np.array([x1, y1, x2, y2], dtype=float), truncated))
    return frame, visible


def _tracks(rng: np.random.Generator, categories: list[str], width: int, height: int, first_id: int,
            base_colours: dict[str, np.ndarray], sizes: dict[str, tuple[float, float]], frames: int) -> list[_Track]:
    tracks = []
    for k, category in enumerate(categories):
        w, h = sizes[category]
        scale = rng.uniform(0.7, 1.3)
        start = np.array([rng.uniform(0.1, 0.9) * width, rng.uniform(0.45, 0.85) * height])
        velocity = rng.uniform(-1, 1, 2) * [0.25 * width / frames, 0.03 * height / frames]
        texture = _texture(rng, base_colours[category] + rng.uniform(-35, 35, 3), contrast=55)
        tracks.append(_Track(first_id + k, category, texture, start, velocity, np.array([w, h]) * scale, rng.uniform(0, 6)))
    return tracks


_BDD_SIZES = {"pedestrian": (40, 100), "rider": (45, 105), "car": (170, 110), "truck": (220, 180),
              "bus": (280, 200), "train": (400, 200), "motorcycle": (70, 70), "bicycle": (60, 65),
              "other vehicle": (150, 120), "crowd": (200, 120)}


BDD_SIZE = (1280, 720)  # W x H of BDD100K frames
BDD_PAN = 2  # px per frame the camera pans


def _bdd100k_parts(root: Path, spec: WorldSize, seed: int) -> list[tuple]:
    return [(_write_bdd_video, root, v, spec.frames, seed) for v in range(spec.bdd_videos)]


def _write_bdd_video(root: Path, v: int, frames: int, seed: int) -> None:
    width, height = BDD_SIZE
    rng_colours = _rng(seed, "bdd100k", "colours")
    colours = {c: _hsv(i / len(_BDD_SIZES), 0.6, 0.8) + rng_colours.uniform(-10, 10, 3) for i, c in enumerate(_BDD_SIZES)}
    street_bank = _bank(34, _rng(seed, "bdd100k", "textures"))
    label_dir = root / "labels" / "box_track_20" / "val"
    label_dir.mkdir(parents=True, exist_ok=True)
    categories = ["car", "car", "car", "pedestrian", "pedestrian", "truck", "bus", "rider", "bicycle", "motorcycle",
                  "other vehicle", "crowd"]
    rng = _rng(seed, "bdd100k", v)
    video = f"{rng.integers(16**8):08x}-{rng.integers(16**8):08x}"
    background = _paint(_street_labels(rng, height, width + BDD_PAN * frames + 1, objects=False), street_bank)
    # track ids run on across videos, as in the label files
    tracks = _tracks(rng, categories, width, height, 1 + v * len(categories), colours, _BDD_SIZES, frames)
    frames_json = []
    image_dir = root / "images" / "track" / "val" / video
    image_dir.mkdir(parents=True, exist_ok=True)
    for t in range(frames):
        frame, visible = _render(background, tracks, t, BDD_PAN * t, width)
        name = f"{video}-{t + 1:07d}.jpg"
        _save_image(frame, image_dir / name, quality=90)
        labels = [{
            "id": f"{track.track_id:08d}",
            "category": "car" if track.category == "crowd" else track.category,
            "attributes": {"occluded": False, "truncated": truncated, "crowd": track.category == "crowd"},
            "box2d": {"x1": box[0], "x2": box[2] - 1, "y1": box[1], "y2": box[3] - 1},
        } for track, box, truncated in visible]
        frames_json.append({"name": name, "videoName": video, "frameIndex": t, "labels": labels})
    _save_text(json.dumps(frames_json), label_dir / f"{video}.json")


def _mot17_parts(root: Path, spec: WorldSize, seed: int) -> list[tuple]:
    return [(_write_mot_sequence, root, sequence, seed) for sequence in spec.mot_sequences]


def _write_mot_sequence(root: Path, sequence: MotSequence, seed: int) -> None:
    width, height, frames = sequence.width, sequence.height, sequence.frames
    street_bank = _bank(34, _rng(seed, "mot17", "textures"))
    scale = height / 540  # people and cars keep their share of the frame
    sizes = {"pedestrian": (40 * scale, 110 * scale), "static": (40 * scale, 105 * scale), "car": (160 * scale, 100 * scale)}
    rng = _rng(seed, "mot17", sequence.name)
    colours = {c: _hsv(rng.random(), 0.6, 0.75) for c in sizes}
    background = _paint(_street_labels(rng, height, width + 1, objects=False), street_bank)
    categories = ["pedestrian"] * 7 + ["static", "car"]
    tracks = _tracks(rng, categories, width, height, 1, colours, sizes, frames)
    tracks[-2].velocity[:] = 0  # a static person (class 7) and a parked car (class 3)
    tracks[-1].velocity[:] = 0
    seq_dir = root / "MOT17" / "train" / sequence.name
    (seq_dir / "img1").mkdir(parents=True, exist_ok=True)
    (seq_dir / "gt").mkdir(parents=True, exist_ok=True)
    rows = []
    for t in range(frames):
        frame, visible = _render(background, tracks, t, 0, width)
        _save_image(frame, seq_dir / "img1" / f"{t + 1:06d}.jpg", quality=90)
        for track, box, _ in visible:
            mot_class, flag = {"pedestrian": (1, 1), "static": (7, 0), "car": (3, 0)}[track.category]
            if track.track_id == 1 and t >= frames // 2:
                flag = 0  # an ignored stretch of a pedestrian track (flag 0 is not ground truth)
            x, y, w, h = box[0] + 1, box[1] + 1, box[2] - box[0], box[3] - box[1]
            rows.append((track.track_id, t + 1, f"{t + 1},{track.track_id},{x:g},{y:g},{w:g},{h:g},{flag},{mot_class},1"))
    rows.sort()  # sorted by id, then frame, like the real files
    _save_text("".join(r[2] + "\n" for r in rows), seq_dir / "gt" / "gt.txt")
    _save_text(
        f"[Sequence]\nname={sequence.name}\nimDir=img1\nframeRate={sequence.fps:g}\nseqLength={frames}\n"
        f"imWidth={width}\nimHeight={height}\nimExt=.jpg\n\n",
        seq_dir / "seqinfo.ini",
    )
