"""The HTTP layer: app factory, JSON API, media and HTML pages."""
