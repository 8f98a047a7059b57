"""The actor tests' fixtures (a fake server, a runs directory, an agent started against
them), shared by every module here as `tests/actors/test_actors_without_server.py` defines
them."""

from tests.actors.test_actors_without_server import fake, runs_dir, start

__all__ = ["fake", "runs_dir", "start"]
