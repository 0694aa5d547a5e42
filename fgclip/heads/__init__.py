"""Weakly supervised heads on snippet features (issue 29): VadCLIP-style (`vadclip`) and Sultani's
MIL ranking (`mil`), their losses, the per-video feature data, the trainer (`train-head`) and the
scoring of test lists into evaluation's frame scores."""
