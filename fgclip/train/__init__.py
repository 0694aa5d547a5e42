"""Stage 2: training (the loop, the shard loader, gradient caching, losses, presets, checkpoints, logs)."""
