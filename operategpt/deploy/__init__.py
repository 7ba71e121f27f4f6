"""Running the servers: gunicorn settings, the gunicorn runner and log formats."""
