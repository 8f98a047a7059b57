"""The command users run (`prefect-actor-agent start`, `python -m actors`): flags, logging,
signals, and, with the `prefect` extra, a local server and a demo flow of its own."""
