"""The agent's decisions as pure functions and small value classes: no pykka, no server.

Which runs to admit, what an exit code means, which state to propose, how a deployment becomes
a process, when to retry, how supervision restarts. Tested without threads or a server.
"""
