"""The Prefect REST API's shapes, as the agent sends and reads them (`prefect`)."""
