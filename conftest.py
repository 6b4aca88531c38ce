"""Root conftest: the harness's pytest plugin is loaded through its pytest11 entry point
(harness.plugin); the claims' session fixtures live in fixtures/ and are registered here."""

pytest_plugins = ["fixtures.plugin"]
