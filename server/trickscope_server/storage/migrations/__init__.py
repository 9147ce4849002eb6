"""Alembic migration scripts, shipped inside the package so installed servers can upgrade."""
