"""The HTTP layer: the app factory, blueprints that turn requests into gateway calls, and the JSON replies."""
