"""Beyond the paper: the harness's own findings, in the same form as the paper's claims.

X.1 and X.2 are judged once per run, from what the other claims of the run recorded
(`claim_results` waits until every other claim test of the run has a verdict).
"""

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
