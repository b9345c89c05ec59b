"""swarmlog.schemas."""
