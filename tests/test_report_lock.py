"""Two evaluations into one report directory: the second is refused at once, naming the first."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

from click.testing import CliRunner
from test_evaluate import ANNOTATIONS, VIDEOS, write_test_shards

from fgclip.cli import main as cli
from pipeline.run_lock import LOCK_FILE_NAME

FGCLIP = str(Path(sys.executable).parent / "fgclip-vad")


def test_second_evaluation_into_one_directory_is_refused(tmp_path, model_dir):
    model = model_dir
    shards = tmp_path / "shards"
    shards.mkdir()
    write_test_shards(shards, videos=VIDEOS[:2])
    annotations = tmp_path / "Temporal_Anomaly_Annotation.txt"
    annotations.write_text(ANNOTATIONS)
    out = tmp_path / "report"
    args = ["eval", "--checkpoint", str(model), "--test-shards", str(shards), "--annotations", str(annotations),
            "--no-baseline", "--out", str(out), "--readers", "0", "--quiet", "--no-video-plots"]
    first = subprocess.Popen([FGCLIP, *args], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        lock_file = out / LOCK_FILE_NAME
        deadline = time.monotonic() + 120
        while not (lock_file.is_file() and lock_file.read_text()) and first.poll() is None:
            assert time.monotonic() < deadline, "the first evaluation never took its lock"
            time.sleep(0.05)
        second = CliRunner().invoke(cli, args)
        assert first.poll() is None, "the first evaluation ended before the second started; the test proves nothing"
        assert second.exit_code == 1
        message = second.output.strip().splitlines()[-1]
        assert f"in use by another run of `fgclip-vad eval` (pid {first.pid} on host" in message
        assert "choose another --out" in message
    finally:
        output, _ = first.communicate(timeout=300)
    assert first.returncode == 0, output
    assert (out / "report.json").is_file()
