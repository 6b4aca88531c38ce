"""Section 6: how well do ViTs track objects? (BDD100K MOT 2020 val; MOT17)

Setup: per frame, patch embeddings; each ground-truth box pooled with ROIAlign into one
vector per object. For a frame gap D, every object at frame t whose track is also present
at t+D retrieves the object with the nearest vector at t+D (objects that left the scene are
not queries; their share is reported as `left_out`). Instance accuracy: same track id;
category accuracy: same category. D counts annotated frames (BDD100K: 5 fps); the report
gives D in seconds too.

One test per finding (see claims/test_s3_patch_classification.py for the reading rules).
"""

from harness.claims import claim, expect, need, reported

PAPER_MODELS = ("dino", "dinov2", "supervised", "mae", "simmim")


def mean_over_gaps(section, metric: str, models=PAPER_MODELS, gaps=None):
    """Per model, the metric averaged over the gaps every model was measured at."""
    acc = section.grid(metric, index="gap", need=models, model=list(models))
    if gaps is not None:
        acc = acc[acc.index.isin(list(gaps))]
    need(len(acc.dropna()), f"needs {metric} at a gap measured for every model")
    return acc.dropna().mean()


@claim("S6.1", ref="fig 7")
def test_dino_and_dinov2_associate_best(bdd100k):
    """dino and dinov2 are the best at association.

    Averaged over D, their instance accuracies are the top two."""
    mean = mean_over_gaps(bdd100k, "instance_acc")
    for other in ("supervised", "mae", "simmim"):
        with expect(other):
            assert min(mean["dino"], mean["dinov2"]) > mean[other]
    with reported():
        for model in PAPER_MODELS:
            bdd100k.curve("left_out", by="gap", model=model)
            bdd100k.curve("gap_seconds", by="gap", model=model)


@claim("S6.2", ref="fig 7")
def test_dino_slight_edge_for_short_gaps(bdd100k, tolerance=0.01, short_gap_below=10):
    """dino has a slight edge over dinov2 for short gaps (D < 10).

    The mean instance accuracy
    over D in 1..9 of dino >= dinov2's - 0.01."""
    mean = mean_over_gaps(bdd100k, "instance_acc", ("dino", "dinov2"), gaps=range(1, short_gap_below))
    assert mean["dino"] >= mean["dinov2"] - tolerance


@claim("S6.3", ref="fig 7")
def test_accuracy_falls_with_the_gap_then_flattens(bdd100k, tolerance=0.02, flat_d_from=30, flat_d_to=60,
                                                   flat_max_change=0.05):
    """Accuracy falls with D and is flat past about 30 frames.

    For every model, instance
    accuracy is non-increasing in D (tolerance 0.02) and changes by <= 0.05 from D=30 to D=60."""
    for model in PAPER_MODELS:
        acc = bdd100k.curve("instance_acc", by="gap", model=model, need=(flat_d_from, flat_d_to))
        with expect(model):
            assert acc.diff().max() <= tolerance
            assert abs(acc[flat_d_from] - acc[flat_d_to]) <= flat_max_change


@claim("S6.4", ref="fig 7")
def test_supervised_well_below_dino_like_mae(bdd100k, margin=0.05, mae_tolerance=0.05):
    """supervised is well below dino, about like MAE.

    Averaged over D, supervised <= dino -
    0.05 and |supervised - mae| <= 0.05."""
    mean = mean_over_gaps(bdd100k, "instance_acc", ("supervised", "dino", "mae"))
    assert mean["supervised"] <= mean["dino"] - margin
    assert abs(mean["supervised"] - mean["mae"]) <= mae_tolerance


@claim("S6.5", paper={"category_acc_wrong": 0.95}, ref="text, 'more than 95%'")
def test_wrong_matches_mostly_right_category(bdd100k, min_fraction=0.95):
    """A wrong match is still the right category in > 95% of cases for dinov2, slightly less
    for dino and supervised; MAE noticeably worse than supervised.

    Averaged over D, the
    category accuracy among wrong matches is >= 0.95 for dinov2, dinov2 >= dino and >=
    supervised, and mae < supervised."""
    mean = mean_over_gaps(bdd100k, "category_acc_wrong", ("dinov2", "dino", "supervised", "mae"))
    with expect("dinov2"):
        assert mean["dinov2"] >= min_fraction
    for other in ("dino", "supervised"):
        with expect(f"dinov2 vs {other}"):
            assert mean["dinov2"] >= mean[other]
    with expect("mae vs supervised"):
        assert mean["mae"] < mean["supervised"]


@claim("S6.6", ref="appendix")
def test_contrastive_beat_mim_on_mot17(mot17):
    """On MOT17, contrastive models clearly beat MIM models.

    Averaged over D, min(dino,
    dinov2) > max(mae, simmim) in instance accuracy."""
    mean = mean_over_gaps(mot17, "instance_acc", ("dino", "dinov2", "mae", "simmim"))
    assert min(mean["dino"], mean["dinov2"]) > max(mean["mae"], mean["simmim"])
