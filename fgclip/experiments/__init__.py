"""Experiments: ablation grids over seeds from a TOML spec (`fgclip-vad experiment`).

spec.py (the file format) -> cells.py (cells and their stage keys) -> stages.py (each stage a
command line) -> runner.py (shared stage 1, then the cells: here, one per GPU, or as submitit
jobs) -> results.py (results.csv, table.md, table.tex); projection.py is `--dry-run`.
"""
