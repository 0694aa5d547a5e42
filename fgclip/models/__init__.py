"""Model families, checkpoint layouts, tokenising, `init-model` and `export-model`."""
