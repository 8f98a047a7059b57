"""The plumbing under the tree: settings, the context every actor shares, the clock that
delivers delayed messages, the handle a host holds, and the listener base for run events."""
