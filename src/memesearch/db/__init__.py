"""Persistence: SQLAlchemy tables, engine setup, Alembic upgrades and the repository."""
