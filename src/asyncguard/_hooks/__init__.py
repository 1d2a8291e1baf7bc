"""The hook catalog, one module per family of blocking calls."""
