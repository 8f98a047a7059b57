"""Benchmark: the actor agent beside the official `prefect agent start`, on one server, in one run.

    python -m examples.benchmark                      # starts a local server, all contenders
    python -m examples.benchmark --api URL --runs 50 --parts drain --contenders ceiling,ours

(from the repository's root). Contenders, each on a fresh work queue with its own runs, all
created before it starts:

  ceiling      no agent: a plain httpx client proposes Pending and records a pid for each run
               (8 threads), the least work any agent must do per run: the API's own limit
  official-1s  `prefect agent start -q Q` with PREFECT_AGENT_QUERY_INTERVAL=1
  official     `prefect agent start -q Q` at its defaults (poll every 15 s, 10 runs a poll)
  ours         `python examples/agent.py --api URL -q Q` at its defaults, with its status
               endpoint on 127.0.0.1, whose /metrics the benchmark reads

Parts:

  drain        N runs due now whose command is `true`: runs per second from the contender's
               start until every run has an infrastructure_pid, and how long a run waits
               between the poll that found it and its Pending state
  first-poll   a few runs due now, nothing else: poll->Pending of the agent's first poll
  footprint    N runs in flight whose command is `sleep`: the agent's RSS and CPU while they run

The modules, one job each: `server` (what is set up on the Prefect server and read back, via
`actors.launcher.prefect_objects`), `contenders` (starting each agent), `procs` (/proc and
every process started here), `progress` (watching runs get their pids), `ceiling`, `drain`,
`first_poll` and `footprint` (the parts), `agent_metrics` (ours' /metrics), `agent_logs` (the
official agent's log lines), `latency` (median and p95), `figures` (median rounds, ratios),
`report` (table, notes, JSON) and `cli`; the opt-in parts have modules of their own (`fleet*`,
`latency_part` and `pickup*`, `containers*`: flow runs in Docker containers beside Prefect
2.20's agent with a DockerContainer block and Prefect 3's docker worker).

Only the standard library, httpx and prometheus_client's parser: RSS and CPU come from /proc,
so the numbers are the kernel's own. Every process started here (agents, and the flow
processes they start) is stopped before the benchmark exits, on error and on SIGINT/SIGTERM
too.
"""
