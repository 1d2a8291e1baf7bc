"""asyncguard's Django app: ``INSTALLED_APPS += ["asyncguard.django"]``.

Settings: ``ASYNC_GUARD = {"MODE": ..., "ALLOW": [...], "MIN_DURATION": 0.0, "EXCLUDE": [...],
"LOG": True, "DEBUG_HEADER": None}``; environment override ``ASYNC_GUARD_MODE``; default mode
``raise`` under ``DEBUG`` and ``off`` otherwise.  The app installs the guard when Django is set
up (so ``AsyncClient`` tests and servers without the middleware are guarded too) and registers
system checks for the settings.
"""

__asyncguard_internal__ = True  # frames of this module are asyncguard's (_frames)
