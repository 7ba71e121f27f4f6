# gunicorn reads this file from the working directory: `gunicorn wsgi:app` gets the shipped settings.
from operategpt.gunicorn_conf import *  # noqa: F403
