"""The linear probe: a softmax classifier on frozen patch embeddings (optional BatchNorm).

One recipe, so every model is probed the same way (the paper gives none):
- model: [BatchNorm1d(D, affine=False, eps=1e-6) ->] Linear(D, C). The BatchNorm is MAE's
  linear-probe BatchNorm (the paper's choice for MAE): no affine parameters, so it only
  standardises each feature with the train set's statistics (cumulative running mean and
  variance over all training batches, momentum=None); "linear+BN" and "k-NN after BN"
  (`normalize`) see the same standardised features;
- loss: cross entropy over the rows whose label is not `ignore_index`;
- optimiser: AdamW, weight decay 1e-4, betas (0.9, 0.999), cosine decay of the learning rate
  to 0 over all steps, no warm-up;
- learning rate: chosen per probe and train set from LR_GRID on held-out train images
  (`fit_with_chosen_lr`): the train *images* (not patches) are split once, seeded, a quarter
  held out; a probe is fitted on the rest at each lr and scored by mIoU on the held-out
  patches; the best lr (ties to the smaller) is refitted on all train images. So BatchNorm
  vs no BatchNorm compares each at its best lr: with one fixed lr, a representation whose
  information sits in near-zero-variance features (SimMIM's long tail) looks unusable
  without BatchNorm only because Adam's steps (about lr per weight) cannot grow the large
  weights such features need within the step budget;
- 10 epochs, mini-batches of 1024 rows, reshuffled every epoch; at least 500 optimiser steps
  (more epochs on a small train set: 10 epochs of a few hundred rows would be a handful of
  steps and leave the probe far from converged; the paper's 450,000-row sets get 4,400);
- float32 throughout (float16 input is converted), parameters initialised and batches
  shuffled from `seed` only, deterministic algorithms on CPU; global torch RNG state and
  thread settings are restored afterwards; training runs on one thread (see below).
"""

from __future__ import annotations

import contextlib
import math
import warnings
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch
from sklearn.model_selection import GroupShuffleSplit
from torch import nn

from harness.probes._validate import as_feature_matrix, as_labels, check_finite
from harness.probes.knn import MissingClassWarning
from harness.probes.metrics import miou

DEFAULT_LR = 1e-3
LR_GRID = (1e-4, 1e-3, 1e-2, 1e-1)  # decades around AdamW's usual 1e-3
HOLDOUT_FRACTION = 0.25  # of the train images, for choosing the learning rate
BATCHNORM_EPS = 1e-6  # MAE's linear-probe BatchNorm
CONVERT_ROWS = 65536  # rows converted to float32 tensors at a time
PREDICT_ROWS = 16384


@contextlib.contextmanager
def _deterministic_torch(seed: int) -> Iterator[None]:
    """Seeded, deterministic torch for the duration; previous global settings restored."""
    previous_mode = torch.are_deterministic_algorithms_enabled()
    previous_threads = torch.get_num_threads()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        torch.use_deterministic_algorithms(True)
        # One thread: each step's matrices are tiny (batch x D x C), so a second thread
        # costs more in synchronisation than it saves, and results cannot depend on it.
        torch.set_num_threads(1)
        try:
            yield
        finally:
            torch.use_deterministic_algorithms(previous_mode)
            torch.set_num_threads(previous_threads)


def _to_tensor(x: np.ndarray) -> torch.Tensor:
    out = torch.empty(x.shape, dtype=torch.float32)
    for s in range(0, x.shape[0], CONVERT_ROWS):
        out[s : s + CONVERT_ROWS] = torch.from_numpy(np.asarray(x[s : s + CONVERT_ROWS], np.float32))
    return out


class LinearProbe:
    """Softmax classifier on frozen features; see the module docstring for the recipe.

    >>> probe = LinearProbe(batchnorm=True, seed=0).fit(train_x, train_y, num_classes=19)
    >>> pred = probe.predict(val_x)
    >>> mean, var = probe.batchnorm_stats      # running statistics of the fitted BatchNorm
    >>> normalised = probe.normalize(val_x)    # (x - mean) / sqrt(var + eps), train statistics
    """

    def __init__(
        self,
        batchnorm: bool = False,
        seed: int = 0,
        *,
        epochs: int = 10,
        min_steps: int = 500,
        batch_size: int = 1024,
        lr: float = DEFAULT_LR,
        weight_decay: float = 1e-4,
    ) -> None:
        self.batchnorm = batchnorm
        self.seed = seed
        self.epochs = epochs
        self.min_steps = min_steps
        self.batch_size = batch_size
        self.lr = lr
        self.weight_decay = weight_decay
        self.model_: nn.Sequential | None = None
        self.num_classes_: int | None = None
        self.missing_classes_: np.ndarray | None = None
        self.loss_history_: list[float] = []

    def fit(self, x, y, ignore_index: int = 255, num_classes: int | None = None) -> LinearProbe:
        """Train on rows with y != ignore_index; num_classes defaults to max(y) + 1.

        Classes in range(num_classes) without a training row raise a MissingClassWarning
        (kept in `missing_classes_`); they stay in the output layer but are never learnt.
        """
        x = as_feature_matrix("x", x)
        y = as_labels("y", y, x.shape[0])
        keep = y != ignore_index
        if not keep.any():
            raise ValueError(
                f"empty train set: no rows with a label other than ignore_index={ignore_index}"
            )
        x_rows = x if keep.all() else x[np.flatnonzero(keep)]
        y = y[keep].astype(np.int64)
        check_finite("x", x_rows)
        if y.min() < 0:
            raise ValueError(f"labels must be >= 0 (or ignore_index), got {y.min()}")
        num_classes = int(y.max()) + 1 if num_classes is None else num_classes
        if y.max() >= num_classes:
            raise ValueError(f"label {y.max()} is outside [0, num_classes={num_classes})")
        self.missing_classes_ = np.setdiff1d(np.arange(num_classes), y)
        if self.missing_classes_.size:
            warnings.warn(
                f"classes {self.missing_classes_.tolist()} have no train rows and can never be learnt",
                MissingClassWarning,
                stacklevel=2,
            )
        self.num_classes_ = num_classes
        dim = x_rows.shape[1]
        with _deterministic_torch(self.seed):
            layers: list[nn.Module] = (
                [nn.BatchNorm1d(dim, eps=BATCHNORM_EPS, momentum=None, affine=False)] if self.batchnorm else [])
            model = nn.Sequential(*layers, nn.Linear(dim, num_classes))
            features, labels = _to_tensor(x_rows), torch.from_numpy(y)
            self._train(model, features, labels)
        self.model_ = model.eval()
        return self

    def _train(self, model: nn.Sequential, features: torch.Tensor, labels: torch.Tensor) -> None:
        n = features.shape[0]
        steps_per_epoch = math.ceil(n / self.batch_size)
        epochs = max(self.epochs, math.ceil(self.min_steps / steps_per_epoch))
        optimiser = torch.optim.AdamW(model.parameters(), lr=self.lr, weight_decay=self.weight_decay)
        schedule = torch.optim.lr_scheduler.CosineAnnealingLR(
            optimiser, T_max=epochs * steps_per_epoch
        )
        shuffle = torch.Generator().manual_seed(self.seed)
        loss_fn = nn.CrossEntropyLoss()
        model.train()
        self.loss_history_ = []
        for _ in range(epochs):
            order = torch.randperm(n, generator=shuffle)
            total = 0.0
            for s in range(0, n, self.batch_size):
                batch = order[s : s + self.batch_size]
                if self.batchnorm and batch.numel() == 1:
                    continue  # BatchNorm cannot train on a single row
                loss = loss_fn(model(features[batch]), labels[batch])
                optimiser.zero_grad(set_to_none=True)
                loss.backward()
                optimiser.step()
                schedule.step()
                total += loss.item() * batch.numel()
            self.loss_history_.append(total / n)

    def _fitted(self) -> nn.Sequential:
        if self.model_ is None:
            raise RuntimeError("LinearProbe is not fitted; call fit(x, y) first")
        return self.model_

    def _check_width(self, x: np.ndarray) -> None:
        width = self._fitted()[-1].in_features
        if x.shape[1] != width:
            raise ValueError(f"x has {x.shape[1]} features but the probe was fitted on {width}")

    @torch.no_grad()
    def predict_proba(self, x) -> np.ndarray:
        """[N, C] float32 class probabilities."""
        x = as_feature_matrix("x", x)
        self._check_width(x)
        check_finite("x", x)
        model = self._fitted()
        out = np.empty((x.shape[0], self.num_classes_), dtype=np.float32)
        for s in range(0, x.shape[0], PREDICT_ROWS):
            logits = model(_to_tensor(x[s : s + PREDICT_ROWS]))
            out[s : s + PREDICT_ROWS] = torch.softmax(logits, dim=1).numpy()
        return out

    @torch.no_grad()
    def predict(self, x) -> np.ndarray:
        """[N] int64 class labels (argmax of the logits; ties to the lowest class)."""
        x = as_feature_matrix("x", x)
        self._check_width(x)
        check_finite("x", x)
        model = self._fitted()
        out = np.empty(x.shape[0], dtype=np.int64)
        for s in range(0, x.shape[0], PREDICT_ROWS):
            out[s : s + PREDICT_ROWS] = model(_to_tensor(x[s : s + PREDICT_ROWS])).argmax(1).numpy()
        return out

    def _batchnorm(self) -> nn.BatchNorm1d:
        model = self._fitted()
        if not self.batchnorm:
            raise RuntimeError("this probe has no BatchNorm; construct it with batchnorm=True")
        return model[0]

    @property
    def batchnorm_stats(self) -> tuple[np.ndarray, np.ndarray]:
        """(running mean, running variance) of the fitted BatchNorm, float32 [D] each."""
        bn = self._batchnorm()
        return bn.running_mean.numpy().copy(), bn.running_var.numpy().copy()

    @torch.no_grad()
    def normalize(self, x) -> np.ndarray:
        """x through the fitted BatchNorm in eval mode: (x - mean) / sqrt(var + eps) with the
        train set's running statistics (no affine parameters). This is "applying the
        pretrained BatchNorm layer from the linear model" before k-NN (claim S4.5)."""
        x = as_feature_matrix("x", x)
        self._check_width(x)
        bn = self._batchnorm()
        out = np.empty(x.shape, dtype=np.float32)
        for s in range(0, x.shape[0], PREDICT_ROWS):
            out[s : s + PREDICT_ROWS] = bn(_to_tensor(x[s : s + PREDICT_ROWS])).numpy()
        return out


@dataclass(frozen=True)
class LrChoice:
    """The learning rate a probe was fitted with, and how it was chosen."""

    lr: float
    scores: dict[float, float]  # held-out mIoU per candidate lr (empty: no choice was made)
    held_out: np.ndarray  # the held-out group (image) ids


def choose_lr(x, y, groups, *, batchnorm: bool, num_classes: int, seed: int, split_seed: int,
              lr_grid: tuple[float, ...] = LR_GRID, holdout: float = HOLDOUT_FRACTION,
              ignore_index: int = 255, **probe_args) -> LrChoice:
    """The lr of `lr_grid` whose probe, fitted on the train rows of the groups not held out,
    has the highest mIoU on the held-out groups' rows (ties to the smaller lr).

    groups: [N] the image each row comes from; the split draws whole groups (`split_seed`,
    the same for every model, so their choices are made on the same images). With one lr
    in the grid, or fewer than two groups, nothing is chosen (`scores` empty)."""
    x = as_feature_matrix("x", x)
    y = as_labels("y", y, x.shape[0])
    groups = as_labels("groups", groups, x.shape[0])
    lr_grid = tuple(sorted(float(lr) for lr in lr_grid))
    if not lr_grid:
        raise ValueError("lr_grid is empty")
    unique = np.unique(groups)
    if len(lr_grid) == 1 or len(unique) < 2:
        return LrChoice(lr_grid[0] if len(lr_grid) == 1 else DEFAULT_LR, {}, np.zeros(0, np.int64))
    splitter = GroupShuffleSplit(n_splits=1, test_size=holdout, random_state=split_seed)
    fit_rows, held_rows = next(splitter.split(np.zeros(len(groups)), groups=groups))
    held_out = np.unique(groups[held_rows])
    held_rows = held_rows[y[held_rows] != ignore_index]
    if held_rows.size == 0:  # nothing to score on: keep the default
        return LrChoice(DEFAULT_LR, {}, held_out)
    x_fit, y_fit, x_held, y_held = x[fit_rows], y[fit_rows], x[held_rows], y[held_rows]
    scores: dict[float, float] = {}
    with warnings.catch_warnings():  # a class only on held-out images cannot be learnt: fine
        warnings.simplefilter("ignore", MissingClassWarning)
        for lr in lr_grid:
            probe = LinearProbe(batchnorm=batchnorm, seed=seed, lr=lr, **probe_args).fit(
                x_fit, y_fit, ignore_index=ignore_index, num_classes=num_classes)
            score = miou(probe.predict(x_held), y_held, num_classes, ignore_index)[0]
            scores[lr] = float(score) if np.isfinite(score) else float("-inf")
    best = max(lr_grid, key=lambda lr: (scores[lr], -lr))  # highest score, then smaller lr
    return LrChoice(best, scores, held_out)


def fit_with_chosen_lr(x, y, groups, *, batchnorm: bool, num_classes: int, seed: int,
                       split_seed: int, lr_grid: tuple[float, ...] = LR_GRID,
                       ignore_index: int = 255, **probe_args) -> tuple[LinearProbe, LrChoice]:
    """`choose_lr`, then the probe refitted on every train row at the chosen lr."""
    choice = choose_lr(x, y, groups, batchnorm=batchnorm, num_classes=num_classes, seed=seed,
                       split_seed=split_seed, lr_grid=lr_grid, ignore_index=ignore_index, **probe_args)
    probe = LinearProbe(batchnorm=batchnorm, seed=seed, lr=choice.lr, **probe_args).fit(
        x, y, ignore_index=ignore_index, num_classes=num_classes)
    return probe, choice
