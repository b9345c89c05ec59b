"""swarmlog.projections."""
