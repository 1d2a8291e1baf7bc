import os
from django.core.asgi import get_asgi_application
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "myproject.settings")
application = get_asgi_application()
from asyncguard import AsyncGuardMiddleware
application = AsyncGuardMiddleware(application)
