"""The edges the actors drive: the Prefect REST API (`prefect_api`), the infrastructure seam
(`infrastructure`, its kinds chosen in `kinds`; `process_kind`: local processes, made of
`processes` and started by `spawn`) and the event stream. Nothing else in the agent talks to
the outside world."""
