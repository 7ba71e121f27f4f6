# gunicorn reads this file from the working directory: `gunicorn wsgi:app` gets the shipped settings.
from operategpt.deploy.gunicorn_conf import *  # noqa: F403
