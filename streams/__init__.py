"""swarmlog.streams."""
