"""Governance: identities and roles, the promotion workflow, the tamper-evident audit trail."""
