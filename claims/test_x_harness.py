"""Beyond the paper: the harness's own findings, in the same form as the paper's claims.

X.1 and X.2 are judged once per run, from what the other claims of the run recorded
(`claim_results` waits until every other claim test of the run has a verdict). X.4 judges
the backbones a run adds (`backbones`), X.5 Scale-MAE on FAIR1M.
"""

from claims.test_s5_retrieval import mean_original_rate
from harness.claims import claim, expect, need
from harness.measurements import higher_is_better, row_label


@claim("X.1", ref="harness", fails_as="fragile")
def test_verdicts_are_stable_under_resampling(claim_results, fragile_below=0.9):
    """Every claim's verdict is stable under resampling.

    Bootstrap over val units (images, tiles, videos; 1000 resamples) and, with
    --claims-train-seeds N, over N independently drawn few-shot training subsets. Each claim's confidence intervals are reported; a claim whose
    verdict holds in < 90% of resamples (or of training subsets) is 'fragile'."""
    judged = [r for r in claim_results.wait() if r.holds is not None]
    resampled = [r for r in judged if r.holds_fraction is not None or r.train_holds_fraction is not None]
    need(resampled, "no claim of this run was judged on bootstrap resamples (--claims-bootstrap 0, "
                    "or no claim could be measured)")
    for result in resampled:
        for fraction in (result.holds_fraction, result.train_holds_fraction):
            if fraction is None:
                continue
            agreeing = fraction if result.holds else 1 - fraction  # the verdict, not 'holds'
            with expect(result.id):
                assert agreeing >= fragile_below


@claim("X.2", ref="harness")
def test_no_metric_regressed_against_the_baseline(claim_results, tolerance=0.02):
    """A swapped checkpoint is judged against a stored baseline report.

    With --claims-weights NAME=PATH (or a hub id) and --claims-baseline FILE: a higher-is-better metric that drops by more than
    its tolerance (--claims-tolerance) fails as a regression."""
    need(claim_results.baseline is not None,
         "no --claims-baseline FILE given: X.2 compares this run with a stored claims.json")
    claim_results.wait()
    rows = claim_results.rows()
    need(rows, "no section could be measured in this run (see the skip reasons of the S-claims)")
    compared = 0
    for row in rows:
        old = claim_results.baseline_value(row)
        if old is None or not higher_is_better(row):
            continue
        compared += 1
        with expect(row_label(row)):
            assert row["value"] >= old - tolerance
    need(compared, "no metric row of this run is in the baseline")


@claim("X.3", ref="harness")
def test_bf16_extraction_agrees_with_fp32(precision, min_agreement=0.99, max_shift=0.005):
    """Verdicts do not depend on numeric precision: bf16 extraction (the fast GPU path) agrees
    with fp32.

    On a fixed small slice of every section's val views, extracted both ways: 1-NN predictions
    agree on >= 99% of queries and each metric differs by <= 0.005. Judged wherever bf16 is
    used, skipped (saying so) where the run is fp32 only."""
    agreement = precision.grid("nn_agreement", index="dataset")
    shift = precision.grid("metric_shift", index="dataset")
    need(agreement.size and shift.size, "no section of this run was measured on the precision slice")
    for dataset, row in agreement.iterrows():
        for model, share in row.dropna().items():
            with expect(f"{model} {dataset}: 1-NN"):
                assert share >= min_agreement
    for dataset, row in shift.iterrows():
        for model, largest in row.dropna().items():
            with expect(f"{model} {dataset}: metrics"):
                assert largest <= max_shift


@claim("X.4", ref="harness")
def test_family_findings_hold_beyond_the_paper(backbones, knn_ratio=0.75, max_pruning_gain=0.10,
                                               association_margin=0.0, linear_ratio=2.5, pruning_gain=1.5,
                                               variance_vs_dino=10.0):
    """The paper's family findings hold for backbones beyond the paper (DINOv2 with registers,
    DINOv3, EVA-02 MIM, ...).

    For each model added with its family (--claims-add-model NAME=SOURCE:FAMILY): contrastive:
    kNN >= 0.75 x linear (S3.2), pruning 200 features lifts kNN by at most 10% (S4.4), instance
    accuracy over D above every MIM model of the run (S6.1, S6.6); MIM: linear >= 2.5 x kNN
    (S3.3), pruning 200 lifts kNN >= 1.5x (S4.2), top-10/median variance ratio >= 10 x dino's
    (S4.1). The report shows every model of the run against these findings as a matrix."""
    judged = [m for m, family in backbones.added.items() if family in ("contrastive", "MIM")]
    need(judged, "only supervised backbones were added: the paper states no finding of that family")
    for model in judged:
        value = backbones.findings(model)
        if backbones.added[model] == "contrastive":
            with expect(f"{model}: kNN vs linear"):
                assert value["knn_over_linear"] >= knn_ratio
            with expect(f"{model}: pruning"):
                assert value["pruning_gain"] <= 1 + max_pruning_gain
            with expect(f"{model}: association"):
                assert value["association_margin"] > association_margin
        else:
            with expect(f"{model}: linear vs kNN"):
                assert value["linear_over_knn"] >= linear_ratio
            with expect(f"{model}: pruning"):
                assert value["pruning_gain"] >= pruning_gain
            with expect(f"{model}: variance spectrum"):
                assert value["variance_vs_dino"] >= variance_vs_dino


@claim("X.5", ref="arXiv v2, abstract")
def test_scale_mae_has_high_variance_features_and_pruning_helps(fair1m, ratio=10.0):
    """Scale-MAE, a MAE extension for remote sensing (ViT-L/16, official release), has the
    same high-variance features, and removing them helps it too.

    On FAIR1M (its own domain; the input's ground sample distance given to its position
    encoding and recorded in the report): the top-10/median variance ratio of its features is
    >= 10 x dino's; its mean original-match rate with its 200 highest-variance features removed
    is above the rate without removal."""
    spread = fair1m.value("variance_ratio", model="scale_mae")
    dino = fair1m.value("variance_ratio", model="dino")
    assert spread >= ratio * dino
    pruned = mean_original_rate(fair1m, "scale_mae", variant="pruned")
    full = mean_original_rate(fair1m, "scale_mae")
    assert pruned > full
