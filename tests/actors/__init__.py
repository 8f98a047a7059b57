"""Actor tests without a server: the whole tree against `tests.support.fake_api`."""
