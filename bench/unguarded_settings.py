"""example_project's settings without asyncguard: the load test's unguarded baseline
(``bench/loadtest.py --baseline none``, served as Django's own application)."""

from myproject.settings import *  # noqa: F403 - the example's settings, one app less
from myproject.settings import INSTALLED_APPS

INSTALLED_APPS = [app for app in INSTALLED_APPS if not app.startswith("asyncguard")]
