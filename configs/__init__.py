"""Training configs (ml_collections); run binaries from the repository root."""
