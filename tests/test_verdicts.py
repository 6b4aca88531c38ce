"""fixtures.verdicts.conclude: which reason a claim test ends with."""

import pytest

from fixtures.context import ClaimsContext
from fixtures.sections import Section
from fixtures.verdicts import conclude
from harness.measurements import Measurement
from harness.profiles import PROFILES


class Skipped(Exception):
    pass


class FakeRecorder:
    def __init__(self, claim_id):
        self.claim_id, self.judged = claim_id, None

    def skip(self, reason):
        raise Skipped(reason)

    def judge(self, table, **kwargs):
        self.judged = table


def context():
    return ClaimsContext(profile=PROFILES["paper"], models=("dino", "dinov2", "mae"), weights={},
                         data_root=None, cache_dir=None, bootstrap=0)


def rows(*models):
    return [Measurement("miou", m, 0.5, {"probe": p, "n_train": 72})
            for m in models for p in ("knn", "linear")]


def test_a_missing_model_that_the_relation_needs_skips_with_its_weights_reason():
    section = Section("s", rows("dino", "supervised"), unavailable={"dinov2": "get dinov2 weights"})
    with pytest.raises(Skipped, match="^get dinov2 weights$"):
        conclude("S3.2", section, context(), FakeRecorder("S3.2"))


def test_a_missing_model_the_relation_does_not_need_is_judged_anyway():
    section = Section("s", rows("mae") + [Measurement("miou", "mae", 0.9, {"probe": "linear_bn", "n_train": 72})],
                      unavailable={"dino": "get dino weights"})
    recorder = FakeRecorder("S3.3")  # S3.3 reads MAE only
    conclude("S3.3", section, context(), recorder)
    assert recorder.judged is not None and set(recorder.judged["model"]) == {"mae"}


def test_no_model_at_all_skips_with_every_reason_and_a_missing_dataset_first():
    section = Section("s", [], unavailable={"dino": "get dino", "mae": "get mae"})
    with pytest.raises(Skipped, match=r"^get dino \| get mae$"):
        conclude("S3.3", section, context(), FakeRecorder("S3.3"))
    with pytest.raises(Skipped, match="no cityscapes"):
        conclude("S3.3", Section("s", dataset_missing="no cityscapes"), context(), FakeRecorder("S3.3"))
