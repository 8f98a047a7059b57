"""The two edges the actors drive: the Prefect REST API (`prefect_api`) and local processes
(`processes`, started by `spawn`). Nothing else in the agent talks to the outside world."""
