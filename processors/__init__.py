"""swarmlog.processors."""
