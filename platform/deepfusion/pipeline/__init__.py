"""The one-command experiment pipeline: every stage of the methodology, skipping what is up to date."""
