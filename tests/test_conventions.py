"""The conventions the report records: complete, plain JSON, and built from the profile."""

import json

from harness.experiments import conventions
from harness.profiles import PROFILES

EXPECTED = {
    "images.resize", "patch_labels", "tokens", "corruptions.where", "corruptions.levels",
    "corruptions.blur", "corruptions.noise", "corruptions.band_noise", "corruptions.band_noise_literal",
    "knn", "linear_probe", "linear_probe.batchnorm", "top_m_sets", "s4_6", "s4_8", "s3_8_classes",
    "s3_11_majority", "s5_tiles", "s5_outcomes", "s6_queries", "s6_frame_size", "s6_roi_align",
    "s6_fps", "few_shot_subsets",
}


def test_every_convention_is_described_in_plain_json():
    paper = conventions(PROFILES["paper"])
    assert set(paper) == EXPECTED
    assert all(isinstance(v, str) and len(v) > 40 for v in paper.values())
    assert json.loads(json.dumps(paper)) == paper


def test_conventions_follow_the_profile_and_the_code():
    paper, smoke = conventions(PROFILES["paper"]), conventions(PROFILES["smoke"])
    assert "short side 336 px" in paper["s6_frame_size"] and "short side 112 px" in smoke["s6_frame_size"]
    assert "resized to 224x224" in paper["images.resize"] and "resized to 112x112" in smoke["images.resize"]
    assert "0.45-0.475" in paper["corruptions.band_noise"] and "std 40" in paper["corruptions.band_noise"]
    assert "0.0001, 0.001, 0.01, 0.1" in paper["linear_probe"]
    assert "5 fps" in paper["s6_fps"] and "75%" in paper["s4_8"] and "7x7" in paper["s6_roi_align"]
    assert "blur 10, 40" in smoke["corruptions.levels"]
