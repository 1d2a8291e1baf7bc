"""The hook catalog, one module per family of blocking calls."""

__asyncguard_internal__ = True  # frames of this module are asyncguard's (_frames)
__asyncguard_work__ = True  # the guard judging or reporting a call (_frames)
