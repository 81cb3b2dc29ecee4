"""Registry metadata storage: tables, transactions and migrations (SQLite and PostgreSQL)."""
