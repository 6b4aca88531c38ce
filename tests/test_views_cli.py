"""`harness show-views`: a readable contact sheet, and a clear error for a missing dataset."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from harness.cli import main


@pytest.mark.parametrize("dataset", ["ade20k", "fair1m", "mot17"])
def test_show_views_writes_a_contact_sheet(synthetic_world, tmp_path, dataset, capsys):
    out = tmp_path / f"{dataset}.png"
    assert main(["show-views", "--dataset", dataset, "--root", str(synthetic_world / dataset), "--out", str(out)]) == 0
    with Image.open(out) as sheet:
        assert sheet.width > 600 and sheet.height > 300
        pixels = np.asarray(sheet.convert("RGB")).reshape(-1, 3)
        assert len(np.unique(pixels, axis=0)) > 100  # pictures, not a blank canvas
    assert "wrote" in capsys.readouterr().out


def test_show_views_on_a_missing_dataset_says_how_to_get_it(tmp_path, capsys):
    rc = main(["show-views", "--dataset", "cityscapes", "--root", str(tmp_path / "nope"), "--out", str(tmp_path / "x.png")])
    assert rc == 1 and not (tmp_path / "x.png").exists()
    err = capsys.readouterr().err
    assert err.startswith("harness show-views: error: ") and "cityscapes-dataset.com" in err
