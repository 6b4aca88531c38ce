"""pytest plugin of vit-local-claims (options, markers, report hooks)."""
