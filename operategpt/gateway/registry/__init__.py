"""The durable worker registry: models, data access, the database and its migrations."""
