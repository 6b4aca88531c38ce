"""A pytest plugin for the fault suite (`-p tests.faults_blind_preflight`): the claims run's
pre-flight sees endless free space, so a disk that is full when the run starts is found
mid-run instead, as when another process fills it after the pre-flight."""

import harness.plan


def pytest_configure(config):
    harness.plan.free_bytes = lambda folder: 1 << 60
