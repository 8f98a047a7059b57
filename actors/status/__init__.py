"""What the agent shows an operator: the tree as text, the metrics, and the HTTP endpoints
(`/tree`, `/healthz`, `/metrics`) that serve them."""
