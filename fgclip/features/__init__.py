"""Snippet features of every video of a dataset, in the files the field's heads read (`fgclip-vad features`)."""
