"""The Prefect API's shapes, as the agent sends and reads them: the REST API's (`prefect`)
and the event stream's (`events`)."""
