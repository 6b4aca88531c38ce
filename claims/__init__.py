"""The paper's claims, one test per finding (see harness.claims.claim for the form).

These modules are the catalogue of the claims: `harness claims` prints them, and
`harness.claims.judge(ID, table)` judges one of them on a metric table.
"""
