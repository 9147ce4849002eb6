"""Use cases: transactions, validation of payloads and domain errors, framework-free."""
