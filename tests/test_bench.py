"""`fgclip-vad bench --smoke`: the benchmark's four measurements run end to end on the CPU."""

from __future__ import annotations

import json
import subprocess
import sys


def test_bench_smoke_writes_every_measurement(tmp_path):
    out = tmp_path / "bench"
    result = subprocess.run([sys.executable, "-m", "fgclip.cli", "bench", "--smoke", "--profile", "--out", str(out)],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]
    results = json.loads((out / "bench-smoke.json").read_text())
    for path in ("ceiling", "real", "baseline", "eval"):
        assert results[path]["frames_per_s"] > 0, path
    assert results["ceiling"]["flops_per_step"] > 0
    # path 0, the bare vision tower, and every path as a share of it
    assert results["vision_tower"]["train"]["frames_per_s"] > 0 and results["vision_tower"]["inference"]["frames_per_s"] > 0
    for path in ("ceiling", "real", "baseline", "eval"):
        assert results[path]["of_vision_tower"] > 0, path
    # idle share needs CUDA kernels; on the CPU it is reported as unknown, the host waits are counted
    assert "idle_share" in results["ceiling"] and set(results["ceiling"]["host_waits"]) >= {"aten::nonzero"}
    assert (out / "timeline-smoke.json.gz").stat().st_size > 0
    assert 0.0 <= results["real"]["data_wait_share"] < 1.0
    assert results["projected_full_preset_s"] > 0
    # --profile: one step's ops by time, the training step's matrix products among them
    profile = (out / "profile-smoke.txt").read_text()
    assert results["profile"].endswith("profile-smoke.txt") and "aten::mm" in profile
    # The table printed last names every path.
    for row in ("bare vision tower (train)", "ceiling", "real (HDF5 loader)", "decode in the loop",
                "bare vision tower (inference)", "evaluation inference"):
        assert row in result.stdout


def test_bench_smoke_of_the_siglip2_family(tmp_path):
    """The same four measurements with the FG-CLIP 2 family's tiny preset (the H200 figure uses
    `--family siglip2`, a ViT-B/16-shaped SigLIP 2)."""
    out = tmp_path / "bench"
    result = subprocess.run([sys.executable, "-m", "fgclip.cli", "bench", "--smoke", "--family", "siglip2", "--out", str(out)],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]
    results = json.loads((out / "bench-smoke-siglip2.json").read_text())
    assert json.loads((out / "model-tiny-siglip2" / "config.json").read_text())["model_type"] == "fgclip2"
    for path in ("ceiling", "real", "baseline", "eval"):
        assert results[path]["frames_per_s"] > 0, path
    assert results["ceiling"]["flops_per_step"] > 0
