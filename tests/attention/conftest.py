def pytest_configure(config):
    config.addinivalue_line("markers", "gpu: needs a CUDA GPU (skipped otherwise)")
    config.addinivalue_line("markers", "slow: takes more than ~5 s")
