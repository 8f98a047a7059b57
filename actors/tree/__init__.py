"""The actors of the tree, one module each, named as the tree shows them.

    Agent                      agent.py           root: supervision, restarts, the tree
    ├── QueueWatcher <queue>   queue_watcher.py   polls one work queue, hands runs on
    ├── QueueMatcher           queue_matcher.py   which queues match now (prefixes, a pool)
    ├── PoolScout <pool>       pool_scout.py      one look at all of a pool's idle queues
    ├── CancelWatcher          cancel_watcher.py  finds runs the server wants cancelled
    ├── EventListener          event_listener.py  the server's event stream: wakes, cancels
    ├── Heartbeat              heartbeat.py       the worker heartbeat to its pool; the lease
    ├── Recovery               recovery.py        recovers lost peers' runs
    └── Dispatcher             dispatcher.py      limit + de-duplication; owns the supervisors
        └── RunSupervisor <id> run_supervisor.py  one flow run, Pending to its outcome

Beside them, what the Agent is built from: `permanent.py` (a child that fails, at start-up
too, tells the Agent), `periodic.py` (the base of the children whose duty comes round),
`children.py` (the table of the Agent's children), `switchboard.py` (which children an agent
has, how each starts, what they hear of each other) and `earlier_life.py` (what an earlier
life of this agent left on this host).

Each actor receives a message, asks a pure rule (`actors.rules`) what to do, and acts through
an edge (`actors.edges`). None of them waits on the server while it could be told to stop.
"""
