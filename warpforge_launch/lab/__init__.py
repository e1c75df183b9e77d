"""Lab tasks: wake, distribute, rollback and smoke-test the dist on GPU boxes."""
