"""Database access: models, engine/session set-up and repositories."""
