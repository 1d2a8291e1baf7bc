"""Real services for tests, started on 127.0.0.1 (placeholder, filled by the services work)."""
