"""Root conftest: loads the harness's pytest plugin (options `--claims-*`, the claim judging and
the report) and the claims' session fixtures. They are loaded here, not through an entry
point, so installing the project changes no other pytest run in the environment."""

pytest_plugins = ["harness.plugin", "fixtures.plugin"]
