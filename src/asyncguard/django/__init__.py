"""asyncguard's Django app: ``INSTALLED_APPS += ["asyncguard.django"]``.

Settings: ``ASYNC_GUARD = {"MODE": ..., "ALLOW": [...], ...}`` (every key is a row of the option
table, ``asyncguard._config.TABLE``, listed in the README); the ``ASYNC_GUARD_*`` environment
variables override them; default mode ``raise`` under ``DEBUG`` and ``off`` otherwise.  The app
installs the guard when Django is set up (so ``AsyncClient`` tests and servers without the
middleware are guarded too) and registers system checks for the settings.
"""

__asyncguard_internal__ = True  # frames of this module are asyncguard's (_frames)
