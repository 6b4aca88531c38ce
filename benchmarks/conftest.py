"""Benchmarks live in bench_*.py so the default test run never collects them; this makes
`pytest benchmarks/` collect them."""


def pytest_configure(config):
    config.addinivalue_line("python_files", "bench_*.py")
