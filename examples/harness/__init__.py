"""The real parts the tests and the benchmark start."""
