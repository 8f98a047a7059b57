"""The plumbing under the tree: settings, the context every actor shares, the clock that
delivers delayed messages, calls made off an inbox, and the listener base for run events.
Nothing here imports the tree (`actors.tree`); the handle that assembles an agent from both
is above them (`actors.agent_handle`)."""
