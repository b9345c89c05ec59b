"""swarmlog.infra."""
