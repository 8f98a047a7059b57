"""The actors of the tree, one module each, named as the tree shows them.

    Agent                      agent.py           root: settings, children, restarts, the tree
    ├── Heartbeat              heartbeat.py       the worker heartbeat to its pool
    ├── Recovery               recovery.py        recovers lost peers' runs
    ├── QueueWatcher <queue>   queue_watcher.py   polls one work queue, hands runs on
    ├── CancelWatcher          cancel_watcher.py  finds runs the server wants cancelled
    └── Dispatcher             dispatcher.py      limit + de-duplication; owns the supervisors
        └── RunSupervisor <id> run_supervisor.py  one flow run, Pending to its outcome

Each actor receives a message, asks a pure rule (`actors.rules`) what to do, and acts through
an edge (`actors.edges`). None of them waits on the server while it could be told to stop.
"""
