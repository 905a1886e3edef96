"""Agents: thin wiring of topics and tables to ``core``; one module per processing path."""
