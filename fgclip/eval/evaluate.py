"""Evaluation: score test shards with one or more models, compare, report.

The flow of `evaluate` (what `fgclip-vad eval` / `make eval` runs):

1. Ground truth from the dataset's official annotation file (`fgclip.eval.ground_truth`: UCF-Crime's
   temporal annotations, XD-Violence's annotations.txt, MSAD's CSV, ShanghaiTech's frame masks),
   and the test videos present in the stride-mode test shards (one stored frame per 16 source
   frames); test videos the file leaves out are normal when their name says so.
   Annotated videos missing from the shards and shard videos without annotation are listed in
   the report; a partial evaluation says so in its headline.
2. Each model (the checkpoints, then the baseline) scores every stored frame: frame embedding
   vs prompt embeddings of {normal, each anomaly class} (several templates averaged in
   embedding space), logits = the model's global scale x cosine (+ its global bias for the
   SigLIP 2 family), and the anomaly score of `fgclip.eval.prompts` (its ANOMALY_SCORE_DEFINITIONS).
3. Optional temporal smoothing over snippets (off by default), then each snippet's score is
   given to the `stride` source frames it covers, cut or padded to the video's true length.
4. Frame-level metrics (`fgclip.eval.metrics`) and the report (`fgclip.eval.report`). The headline is
   the dataset's (`pipeline.datasets`): frame AUC, or for XD-Violence frame AP, given both
   ways (step-wise and trapezoidal) and named.

Scoring speed: readers in other processes (`fgclip.eval.reader`, `fgclip.reader_pool`) put whole
records into one shared block (the readers and the block are kept for the next model scored);
each unit is copied into a small pinned buffer for an asynchronous upload, frames go to the
device as uint8 and are preprocessed there, in batches that span videos, under bf16 autocast on
CUDA (float32 on CPU); each unit's scores come back through a pinned buffer as soon as its
kernels are queued, so the GPU always has the next unit's work.
"""

from __future__ import annotations

import contextlib
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import torch

from fgclip import run_dir
from fgclip.eval.reader import RecordSource, UnitReader, plan_units
from fgclip.eval.ground_truth import (
    CONVENTION_DOC,
    DEFAULT_CONVENTION,
    anomaly_class_names,
    camel_case_to_words,
    complete_with_normals,
    frame_labels,
    frame_ranges,
    load_ground_truth,
    ranges_past_end,
    video_key,
)
from fgclip.eval import heat_strips
from fgclip.eval import report as report_writer
from fgclip.eval.metrics import DEFAULT_THRESHOLD, VideoFrames, compute_metrics
from fgclip.eval.patch_map import PATCH_MAP_DOC
from fgclip.eval.prompts import (ANOMALY_SCORE_DEFINITIONS, NORMAL_PHRASE, PROMPT_TEMPLATES, anomaly_scores, class_prompts,
                                 prompt_embeddings)
from pipeline.datasets import ANOMALY_LABEL, get_dataset
from pipeline.run_lock import RunLock, RunLockError
from pipeline.shards import ShardReader, list_shards, read_manifest

log = logging.getLogger(__name__)

class EvaluationError(RuntimeError):
    """Inputs that cannot be evaluated (no checkpoint, no test videos, ...); the message says what to do."""


# --- test videos in the shards -----------------------------------------------------------------


@dataclass(frozen=True)
class TestVideo:
    """A test video as the stride-mode shards hold it."""

    key: str  # `video_key`: file name without folder and extension
    video: str  # as stored in the shard
    label: str
    is_anomaly: bool
    shard: str
    local_index: int
    stored_frames: int  # snippets: one stored frame per `stride` source frames
    num_source_frames: int  # true length of the video
    stride: int
    height: int
    width: int


@dataclass
class TestSet:
    videos: list[TestVideo]  # unique keys, shard order
    duplicates: list[dict]  # later copies of a key already seen (not scored)
    skipped: list[dict]  # records stage 1 could not decode (from the manifest)


def list_test_videos(test_shard_dir: Path) -> TestSet:
    """Every record of a stride-mode shard directory, plus what its manifest says was skipped."""
    test_shard_dir = Path(test_shard_dir)
    videos: list[TestVideo] = []
    duplicates: list[dict] = []
    seen: dict[str, TestVideo] = {}
    for path in list_shards(test_shard_dir):
        with ShardReader(path) as reader:
            attrs = reader.attrs
            if attrs.sampling != "stride":
                raise EvaluationError(
                    f"{path}: a '{attrs.sampling}'-sampled shard (training data); evaluation needs test shards in "
                    f"stride mode, built by stage 1 from the test split list (`make frames` writes them)")
            for meta in reader.metas():
                video = TestVideo(
                    key=video_key(meta.video), video=meta.video, label=meta.label, is_anomaly=meta.is_anomaly,
                    shard=str(path), local_index=meta.local_index, stored_frames=meta.num_frames,
                    num_source_frames=meta.num_source_frames, stride=attrs.stride,
                    height=attrs.height, width=attrs.width,
                )
                if video.key in seen:
                    duplicates.append({"video": video.video, "shard": str(path), "record": meta.local_index,
                                       "first_in": seen[video.key].shard})
                    continue
                seen[video.key] = video
                videos.append(video)
    skipped = list(read_manifest(test_shard_dir).get("skipped", []))
    return TestSet(videos=videos, duplicates=duplicates, skipped=skipped)


# --- snippet scores to frame scores ------------------------------------------------------------


def smooth_snippets(snippet_scores: np.ndarray, window: int) -> np.ndarray:
    """Moving average over `window` snippets (odd; 1 = unchanged), edges repeated."""
    if window <= 1:
        return snippet_scores
    if window % 2 == 0:
        raise ValueError(f"the smoothing window must be odd (centred), got {window}")
    padded = np.pad(snippet_scores.astype(np.float64), window // 2, mode="edge")
    return np.convolve(padded, np.full(window, 1.0 / window), mode="valid").astype(np.float32)


def expand_to_frames(snippet_scores: np.ndarray, num_frames: int, stride: int) -> np.ndarray:
    """Per-frame scores: frame f gets snippet f // stride; cut to `num_frames`, the last snippet
    repeated if the shard holds fewer snippets than the true length needs."""
    if len(snippet_scores) == 0:
        raise ValueError("a video with no scored snippets cannot be expanded to frames")
    snippet_of_frame = np.minimum(np.arange(num_frames) // stride, len(snippet_scores) - 1)
    return snippet_scores[snippet_of_frame]


@dataclass
class VideoScores:
    """One test video's model output: a score per stored frame (snippet) and the true length."""

    video: str  # as stored in the shard
    label: str
    is_anomaly: bool
    snippet_scores: np.ndarray  # (S,) float32
    num_frames: int  # source frames of the whole video
    stride: int  # source frames per snippet

    def frame_scores(self, smoothing_window: int = 1) -> np.ndarray:
        return expand_to_frames(smooth_snippets(self.snippet_scores, smoothing_window), self.num_frames, self.stride)


def score_videos(model, tokenizer, test_shard_dir: Path, *, class_names: list[str], device, batch_frames: int = 512,
                 videos: Iterable[str] | None = None, num_readers: int = 2, slot_batches: int = 2,
                 templates: Sequence[str] = PROMPT_TEMPLATES, normal_phrase: str = NORMAL_PHRASE,
                 progress: bool = True, description: str = "scoring") -> dict[str, VideoScores]:
    """Score every stored frame of the test shards (or only `videos`, by `video_key`).

    Returns {video_key: VideoScores}. `batch_frames` frames go through the model at once;
    readers fill slots of `slot_batches` batches each, whole videos back to back.
    """
    from tqdm import tqdm

    device = torch.device(device)
    test_set = list_test_videos(Path(test_shard_dir))
    wanted = None if videos is None else set(videos)
    chosen = [v for v in test_set.videos if wanted is None or v.key in wanted]
    if not chosen:
        return {}
    sizes = {(v.height, v.width) for v in chosen}
    if len(sizes) != 1:
        raise EvaluationError(f"{test_shard_dir}: shards of different frame sizes {sorted(sizes)}; rebuild them with one --size")
    height, width = sizes.pop()

    sources = [RecordSource(v.shard, v.local_index, v.stored_frames, video=v.video) for v in chosen]
    slot_rows = batch_frames * max(1, slot_batches)
    # Each reader's first unit is one batch, so that scoring starts after a short read.
    units = plan_units(sources, slot_rows=slot_rows, lead_units=num_readers, lead_rows=min(batch_frames, slot_rows))
    snippet_scores = [np.empty(v.stored_frames, dtype=np.float32) for v in chosen]

    model.eval()
    on_cuda = device.type == "cuda"
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if on_cuda else contextlib.nullcontext()
    bar = tqdm(total=sum(v.stored_frames for v in chosen), unit="frame", desc=description, disable=not progress,
               dynamic_ncols=True)

    def finish(unit_number: int, slot: int | None, unit_scores: torch.Tensor, done: torch.cuda.Event | None) -> None:
        if done is not None:
            done.synchronize()  # this unit's scores are on the host; later units keep the GPU busy
        host_scores = unit_scores.numpy()
        for piece in units[unit_number].pieces:
            rows = host_scores[piece.slot_row:piece.slot_row + piece.num_rows]
            snippet_scores[piece.source_number][piece.first_row:piece.first_row + piece.num_rows] = rows
        if slot is not None:
            reader.release(slot)
        bar.update(len(host_scores))

    def score(frames: torch.Tensor, prompts: torch.Tensor, temperature: torch.Tensor, bias) -> torch.Tensor:
        rows = frames.shape[0]
        unit_scores = torch.empty(rows, dtype=torch.float32, device=device)
        with torch.inference_mode(), autocast:
            for start in range(0, rows, batch_frames):
                batch = frames[start:start + batch_frames]
                count = batch.shape[0]
                if on_cuda and count < batch_frames:
                    # One batch shape on the GPU: compiled blocks are not compiled again for a short last batch.
                    batch = torch.cat([batch, batch.new_zeros((batch_frames - count, *batch.shape[1:]))])
                unit_scores[start:start + count] = anomaly_scores(
                    model.encode_frames(model.preprocess(batch)), prompts, temperature, objective=model.objective,
                    bias=bias)[:count]
        return unit_scores

    def run(slots: torch.Tensor) -> None:
        # The prompts are embedded while the readers start and read the first units.
        prompts = prompt_embeddings(model, tokenizer, class_names, device=device, templates=templates,
                                    normal_phrase=normal_phrase)
        with torch.inference_mode():
            temperature = model.temperatures()["global"].float().to(device)
            bias = model.logit_biases().get("global")
            bias = None if bias is None else bias.float().to(device)
        # On CUDA a unit is copied into one of two small pinned buffers and its slot goes straight
        # back to the readers; the upload runs on its own stream while the previous unit computes.
        # (Pinning the readers' whole shared block instead costs more per call than it saves.)
        if on_cuda:
            copy_stream = torch.cuda.Stream(device)
            staging = torch.empty((2, slot_rows, height, width, 3), dtype=torch.uint8, pin_memory=True)
            uploaded: list[torch.cuda.Event | None] = [None, None]
            # Scores come back through pinned buffers, each copy queued right after its unit: a
            # `.cpu()` issued later would sit behind the next unit's kernels on the stream and
            # wait for them too, so the GPU would run dry once per unit.
            scores_host = torch.empty((2, slot_rows), dtype=torch.float32, pin_memory=True)
        pending = None
        for count, (unit_number, slot) in enumerate(reader):
            rows = units[unit_number].num_rows
            if on_cuda:
                buffer = count % 2
                if uploaded[buffer] is not None:
                    uploaded[buffer].synchronize()  # the copy out of this buffer two units ago is done
                staging[buffer, :rows].copy_(slots[slot, :rows])
                reader.release(slot)
                slot = None
                with torch.cuda.stream(copy_stream):
                    frames = staging[buffer, :rows].to(device, non_blocking=True)
                    uploaded[buffer] = torch.cuda.Event()
                    uploaded[buffer].record(copy_stream)
                torch.cuda.current_stream(device).wait_stream(copy_stream)
                frames.record_stream(torch.cuda.current_stream(device))
            else:
                frames = slots[slot, :rows]
            unit_scores = score(frames, prompts, temperature, bias)
            done = None
            if on_cuda:
                unit_scores = scores_host[buffer, :rows].copy_(unit_scores, non_blocking=True)
                done = torch.cuda.Event()
                done.record(torch.cuda.current_stream(device))
            # Collect the previous unit only now: the device already has this unit's work queued.
            if pending is not None:
                finish(*pending)
            pending = (unit_number, slot, unit_scores, done)
        if pending is not None:
            finish(*pending)

    try:
        with UnitReader(sources, units, height=height, width=width, slot_rows=slot_rows,
                        num_readers=num_readers) as reader:
            run(torch.from_numpy(reader.slots))
    finally:
        bar.close()
    return {
        v.key: VideoScores(video=v.video, label=v.label, is_anomaly=v.is_anomaly, snippet_scores=scores,
                           num_frames=v.num_source_frames, stride=v.stride)
        for v, scores in zip(chosen, snippet_scores)
    }


def load_scoring_model(path: Path, device: torch.device):
    """A model and its tokenizer, ready to score on `device`: on a GPU its transformer blocks are
    compiled (bf16 autocast comes from `score_videos`); the first batch compiles them."""
    from fgclip.models.families import load_model_and_tokenizer

    model, tokenizer = load_model_and_tokenizer(path)
    model.to(device)
    if torch.device(device).type == "cuda":
        model.compile_blocks()
    return model, tokenizer


# --- which models ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class ModelChoice:
    """A model to evaluate: its directory and where that came from."""

    name: str  # unique display name in the report
    role: str  # "checkpoint" or "baseline"
    path: Path  # the model directory loaded
    given: Path  # what the user named (a model dir or a training output dir)
    step: int | None  # training step, when known from the directory name
    selection: str = ""  # how this model was chosen (validation's best/, the run's newest, as given)


def resolve_model_dir(path: Path) -> Path:
    """A model directory as given, or a training output directory's chosen model: `best/` when
    the run kept one by validation, else its newest model."""
    path = Path(path)
    if not path.exists():
        raise EvaluationError(f"{path}: no such checkpoint or training output directory")
    if path.is_dir() and not run_dir.is_model_dir(path):
        latest = run_dir.chosen_model_dir(path)
        if latest is None:
            raise EvaluationError(f"{path}: neither a model directory (config.json + weights) nor a training output "
                                  f"directory with {run_dir.CHECKPOINT_PREFIX}STEP/ or {run_dir.FINAL_DIR_NAME}/ inside")
        return latest
    if not run_dir.is_model_dir(path):
        raise EvaluationError(f"{path}: not a model directory (needs config.json and model.safetensors)")
    return path


def choose_models(checkpoints: Sequence[Path], baseline: Path | None) -> list[ModelChoice]:
    """ModelChoices for the checkpoints (training dirs resolved to their newest model) and the baseline."""
    if not checkpoints:
        raise EvaluationError("no checkpoint to evaluate; give --checkpoint DIR (a model or a training output dir)")
    choices: list[ModelChoice] = []
    names: set[str] = set()

    def unique(name: str) -> str:
        candidate, n = name, 2
        while candidate in names:
            candidate, n = f"{name} #{n}", n + 1
        names.add(candidate)
        return candidate

    for given in checkpoints:
        path = resolve_model_dir(Path(given))
        display = f"{path.parent.name}/{path.name}" if run_dir.in_run(path) else path.name
        choices.append(ModelChoice(unique(display), "checkpoint", path, Path(given), run_dir.training_step(path),
                                   how_chosen(path, Path(given))))
    if baseline is not None:
        path = resolve_model_dir(Path(baseline))
        choices.append(ModelChoice(unique(f"baseline ({path.name})"), "baseline", path, Path(baseline), 0))
    return choices


def how_chosen(model_dir: Path, given: Path) -> str:
    """One sentence: how `model_dir` came to be the model evaluated for what the user gave."""
    selection = run_dir.read_selection(model_dir.parent) if model_dir.name == run_dir.BEST_DIR_NAME else None
    if selection is not None:
        value = selection.get("value")
        shown = f"{value:.4f}" if isinstance(value, (int, float)) else "n/a"
        return (f"{model_dir}: best on the validation split ({selection.get('metric')} {shown} at step "
                f"{selection.get('step')} of {selection.get('total_steps')}; {selection.get('validation')}); "
                f"the test set played no part in choosing it")
    if Path(given).resolve() != Path(model_dir).resolve():
        return (f"{model_dir}: the newest model of {given} (the run kept no validation split; "
                f"--val-fraction chooses a best/ without the test set)")
    return f"{model_dir}: given on the command line"


def selection_summary(models: list[ModelChoice]) -> dict:
    """How the evaluated checkpoints were chosen, and whether this report compares several of
    them on the test split (then choosing among them by these numbers is selection on the test set)."""
    checkpoints = [m for m in models if m.role == "checkpoint"]
    on_test_set = len(checkpoints) > 1
    note = (f"SELECTION ON THE TEST SET: {len(checkpoints)} checkpoints are compared on the test split; picking one "
            f"of them by these numbers chooses on the test set and overstates how it does on unseen data. "
            f"Choose with --val-fraction at training instead (best/)" if on_test_set else
            "one checkpoint evaluated: " + checkpoints[0].selection)
    return {"on_test_set": on_test_set, "note": note, "models": {m.name: m.selection for m in checkpoints}}


# --- what `fgclip-vad eval` evaluates when not told ------------------------------------------------

REPORTS_ROOT = Path("reports")  # reports/<run name>/ unless --out says otherwise


@dataclass(frozen=True)
class EvalInputs:
    """Everything `evaluate` is given, with the command line's defaults filled in."""

    checkpoints: list[Path]
    test_shards: Path
    annotations: Path
    baseline: Path | None
    out_dir: Path
    boxes: Path | None = None  # event boxes for the spatial metric


def default_baseline(checkpoints: Sequence[Path]) -> Path | None:
    """The model the first training run among `checkpoints` started from (its run config's
    "model"); None when none of them is part of a run."""
    for path in checkpoints:
        start = run_dir.starting_model(path) if Path(path).is_dir() else None
        if start is not None:
            if not start.exists():
                raise EvaluationError(f"{path}: the run started from {start}, which does not exist here; "
                                      f"pass --baseline DIR or --no-baseline")
            return start
    return None


def eval_inputs(checkpoints: Sequence[Path] = (), *, test_shards: Path | None = None, annotations: Path | None = None,
                baseline: Path | None = None, no_baseline: bool = False, out_dir: Path | None = None,
                boxes: Path | None = None) -> EvalInputs:
    """Fill in the defaults: the debug preset's run, the embedded default's test shards and
    annotations, the model the run started from as baseline, reports/<run name>/ for the output,
    and for the embedded annotations the generator's event boxes."""
    from pipeline import embedded

    given = [Path(c) for c in checkpoints]
    if not given:
        default_dir = run_dir.default_eval_run()
        if not default_dir.is_dir() or run_dir.latest_model_dir(default_dir) is None:
            raise EvaluationError(f"{default_dir}: no checkpoint yet; run make train-debug first")
        given = [default_dir]
    test_shards = Path(test_shards) if test_shards else embedded.test_shard_dir()
    annotations = Path(annotations) if annotations else embedded.TEMPORAL_ANNOTATIONS
    if not annotations.exists():  # a file, or a folder of frame masks (ShanghaiTech)
        hint = "; run `make frames` first" if annotations == embedded.TEMPORAL_ANNOTATIONS else ""
        raise EvaluationError(f"{annotations}: temporal annotation file not found{hint}")
    if not (test_shards / "manifest.json").is_file():
        raise EvaluationError(f"{test_shards}: no test shards (manifest.json missing); run `make frames` "
                              f"(or `fgclip-vad frames` on the test split) first")
    if no_baseline:
        baseline = None
    elif baseline is not None:
        baseline = Path(baseline)
    else:
        baseline = default_baseline(given)
    out_dir = Path(out_dir) if out_dir is not None else REPORTS_ROOT / run_dir.run_name(given[0])
    if boxes is None and annotations == embedded.TEMPORAL_ANNOTATIONS and embedded.TEST_EVENT_BOXES.is_file():
        boxes = embedded.TEST_EVENT_BOXES
    return EvalInputs(given, test_shards, annotations, baseline, out_dir, Path(boxes) if boxes else None)


def pick_device(device: str | None) -> torch.device:
    if device in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    chosen = torch.device(device)
    if chosen.type == "cuda" and not torch.cuda.is_available():
        raise EvaluationError(f"--device {device}: CUDA is not available on this machine; use --device cpu")
    return chosen


# --- the whole evaluation --------------------------------------------------------------------------


def _coverage(annotations: dict, test_set: TestSet) -> dict:
    in_shards = {v.key for v in test_set.videos if v.stored_frames > 0}
    skipped_reason = {video_key(s.get("video", "")): s.get("reason", "") for s in test_set.skipped}
    skipped_reason.update({v.key: f"{v.shard}: record {v.local_index} holds no frames"
                           for v in test_set.videos if v.stored_frames == 0})
    missing = [
        {"video": key, "label": a.label, "reason": skipped_reason.get(key) or "not in the test shards"}
        for key, a in annotations.items() if key not in in_shards
    ]
    unannotated = [{"video": v.video, "label": v.label} for v in test_set.videos if v.key not in annotations]
    return {
        "annotated_videos": len(annotations),
        "videos_in_shards": len(test_set.videos),
        "evaluated_videos": len(annotations) - len(missing),
        "missing_from_shards": missing,
        "not_annotated": unannotated,
        "duplicates_in_shards": test_set.duplicates,
        "skipped_by_stage1": test_set.skipped,
    }


def evaluate(checkpoints: list[Path], test_shard_dir: Path, annotations: Path, out_dir: Path, **options) -> dict:
    """`score_and_report` holding `out_dir` as a run lock (`pipeline.run_lock`, as training and
    stage 1 hold theirs): a second evaluation into the same report directory stops at once,
    naming the first, instead of mixing its plots and scores into the other's report."""
    try:
        lock = RunLock(Path(out_dir), what="fgclip-vad eval", hint="choose another --out").acquire()
    except RunLockError as err:
        raise EvaluationError(str(err)) from None
    try:
        return score_and_report(checkpoints, test_shard_dir, annotations, out_dir, **options)
    finally:
        lock.release()


def score_and_report(checkpoints: list[Path], test_shard_dir: Path, annotations: Path, out_dir: Path, *,
             baseline: Path | None = None, convention: str = DEFAULT_CONVENTION, smoothing_window: int = 1,
             threshold: float = DEFAULT_THRESHOLD, device: str | None = None, batch_frames: int = 512,
             num_readers: int = 2, templates: Sequence[str] = PROMPT_TEMPLATES,
             normal_phrase: str = NORMAL_PHRASE, video_plots: bool = True, progress: bool = True,
             dataset: str | None = None, heat_maps: bool = True, boxes: Path | None = None) -> dict:
    """Score the test shards with every checkpoint and the baseline; write report.json, report.md,
    report.html, plots/, scores/ and TensorBoard scalars under `out_dir`. Returns the report dict.

    `dataset` (a `pipeline.datasets` name) says how to read `annotations`; by default its format
    decides (`fgclip.eval.ground_truth.detect_dataset`). `heat_maps`: patch maps of anomalous test videos
    (heat strips in the report); `boxes`: an event boxes file (`pipeline.event_boxes`) for the
    spatial metric."""
    if smoothing_window < 1 or smoothing_window % 2 == 0:
        raise EvaluationError(f"--smooth {smoothing_window}: the smoothing window must be an odd number of snippets "
                              f"(1 = no smoothing)")
    test_shard_dir, annotations, out_dir = Path(test_shard_dir), Path(annotations), Path(out_dir)
    models = choose_models(checkpoints, baseline)
    dataset_name, ground_truth = load_ground_truth(annotations, dataset)
    spec = get_dataset(dataset_name)
    test_set = list_test_videos(test_shard_dir)
    ground_truth = complete_with_normals(ground_truth, [(v.key, v.video) for v in test_set.videos], dataset_name)
    class_names = anomaly_class_names(ground_truth) or [ANOMALY_LABEL]
    class_prompts(class_names, templates, normal_phrase)  # bad templates fail here, before any model loads
    coverage = _coverage(ground_truth, test_set)
    videos = [v for v in test_set.videos if v.key in ground_truth and v.stored_frames > 0]
    if not videos:
        raise EvaluationError(f"{test_shard_dir}: none of its {len(test_set.videos)} videos is in {annotations}; "
                              f"are these the test shards of this annotation file?")
    frame_gt = {v.key: frame_labels(ground_truth[v.key], v.num_source_frames, convention) for v in videos}
    cut_intervals = [
        {"video": v.key, "num_frames": v.num_source_frames, "ranges": ranges_past_end(ground_truth[v.key], v.num_source_frames, convention)}
        for v in videos if ranges_past_end(ground_truth[v.key], v.num_source_frames, convention)
    ]
    torch_device = pick_device(device)
    event_boxes, spatial_note = _event_boxes(boxes, videos, frame_gt) if heat_maps else (None, "heat maps off")

    results: list[dict] = []
    map_plans: list[heat_strips.VideoMapPlan] | None = None
    map_results: dict[str, heat_strips.ModelMaps] = {}
    frame_results: dict[str, list[VideoFrames]] = {}
    raw_scores: dict[str, dict[str, np.ndarray]] = {}
    for choice in models:
        started = time.perf_counter()
        model, tokenizer = load_scoring_model(choice.path, torch_device)
        load_s = time.perf_counter() - started
        started = time.perf_counter()
        scores = score_videos(model, tokenizer, test_shard_dir, class_names=class_names, device=torch_device,
                              batch_frames=batch_frames, videos=[v.key for v in videos], num_readers=num_readers,
                              templates=templates, normal_phrase=normal_phrase, progress=progress,
                              description=choice.name)
        score_s = time.perf_counter() - started
        temperature = float(model.temperatures()["global"].detach())
        bias = model.logit_biases().get("global")
        family, objective = model.family, model.objective
        if heat_maps:
            if map_plans is None:  # the strips' peak frames are the first model's
                map_plans = heat_strips.plan_map_frames(videos, frame_gt, {k: a.label for k, a in ground_truth.items()},
                                                      {k: s.snippet_scores for k, s in scores.items()}, event_boxes)
                heat_strips.read_strip_frames(map_plans, videos[0].height, videos[0].width)
            prompts = prompt_embeddings(model, tokenizer, class_names, device=torch_device, templates=templates,
                                        normal_phrase=normal_phrase)
            map_results[choice.name] = heat_strips.model_maps(model, prompts, class_names, map_plans,
                                                            height=videos[0].height, width=videos[0].width,
                                                            device=torch_device)
        del model
        if torch_device.type == "cuda":
            torch.cuda.empty_cache()
        per_video = [
            VideoFrames(video=v.key, label=ground_truth[v.key].label, is_anomaly=ground_truth[v.key].is_anomaly,
                        scores=scores[v.key].frame_scores(smoothing_window), gt=frame_gt[v.key])
            for v in videos
        ]
        frame_results[choice.name] = per_video
        raw_scores[choice.name] = {v.key: scores[v.key].snippet_scores for v in videos}
        stored = sum(v.stored_frames for v in videos)
        results.append({
            "name": choice.name, "role": choice.role, "path": str(choice.path), "given": str(choice.given),
            "step": choice.step, "temperature": temperature, "selection": choice.selection,
            "family": family, "objective": objective, "logit_bias": None if bias is None else float(bias.detach()),
            "score": ANOMALY_SCORE_DEFINITIONS[objective],
            "metrics": compute_metrics(per_video, threshold=threshold),
            "spatial": map_results[choice.name].spatial if choice.name in map_results else None,
            "timing": {"load_s": round(load_s, 3), "scoring_s": round(score_s, 3), "stored_frames": stored,
                       "stored_frames_per_s": round(stored / score_s, 1) if score_s > 0 else None},
        })

    partial = coverage["evaluated_videos"] < coverage["annotated_videos"]
    selection = selection_summary(models)
    report = {
        "headline": _headline(results, coverage, partial, spec.headline) + (
            " [SELECTION ON THE TEST SET: several checkpoints compared]" if selection["on_test_set"] else ""),
        "partial": partial,
        "selection": selection,
        "dataset": {"name": spec.name, "title": spec.title, "headline_metric": spec.headline,
                    "ap": "step-wise average precision: sum over thresholds of (R_n - R_{n-1}) P_n",
                    "ap_trapezoid": "area under the precision-recall curve by the trapezoidal rule"},
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "config": {
            "test_shards": str(test_shard_dir), "annotations": str(annotations), "out_dir": str(out_dir),
            "device": str(torch_device),
            "precision": "bf16 autocast, compiled blocks" if torch_device.type == "cuda" else "float32",
            "batch_frames": batch_frames, "readers": num_readers,
            "stride": sorted({v.stride for v in videos}),
            "prompt_templates": list(templates), "normal_phrase": normal_phrase, "class_names": class_names,
            "class_phrases": {name: camel_case_to_words(name) for name in class_names},
            "score": {objective: ANOMALY_SCORE_DEFINITIONS[objective] for objective in sorted({r["objective"] for r in results})},
            "smoothing": ("none" if smoothing_window == 1 else
                          f"moving average over {smoothing_window} snippets (edges repeated), before expansion"),
            "smoothing_window": smoothing_window,
            "patch_map": PATCH_MAP_DOC if heat_maps else None,
            "spatial": spatial_note,
            "expansion": "each stored frame's score covers the `stride` source frames of its snippet; "
                         "cut to the video's true length, last snippet repeated if the shard holds too few",
        },
        "ground_truth": {
            "convention": convention, "meaning": CONVENTION_DOC[convention],
            "frame_counts": "num_source_frames of each shard record (stage 1's decode)",
            "intervals_cut_at_video_end": cut_intervals,
            "per_class_auc": "frames of the class's videos plus all frames of normal videos",
            "false_alarm_rate": f"fraction of normal-video frames with score > {threshold}",
            "false_alarm_rate_at_recall": "fraction of normal-video frames scoring at least the threshold at which "
                                          "90% of anomalous frames score at least it (the 10th percentile of the "
                                          "anomalous frames' scores)",
        },
        "coverage": coverage,
        "training_caption_scripts": training_caption_scripts(models),
        "models": results,
        "videos": _per_video_summary(videos, ground_truth, frame_gt, frame_results, convention),
    }
    report_writer.write_report(out_dir, report, frame_results, raw_scores, video_plots=video_plots,
                               heat_strips=(map_plans or [], map_results))
    return report


def training_caption_scripts(models: Sequence[ModelChoice]) -> dict[str, list[str]]:
    """{class: non-Latin scripts of its training captions} over the training shards the checkpoints
    were trained on (their run config's "shards"), e.g. {"Explosion": ["Chinese (Han)"]}: which
    classes' per-class AUC measures learning from captions in another language."""
    from pipeline.captions import foreign_scripts

    scripts: dict[str, set[str]] = {}
    for choice in models:
        config = run_dir.read_run_config(choice.path) if choice.role == "checkpoint" else None
        shard_dir = Path(config["shards"]) if config and config.get("shards") else None
        if shard_dir is None or not shard_dir.is_dir():
            continue
        for path in list_shards(shard_dir):
            with ShardReader(path) as reader:
                for meta in reader.metas():
                    for text in (meta.global_caption, *meta.region_captions):
                        scripts.setdefault(meta.label, set()).update(foreign_scripts(text))
    return {label: sorted(found) for label, found in sorted(scripts.items()) if found}


def _event_boxes(boxes: Path | None, videos: list[TestVideo], frame_gt: dict) -> tuple[dict | None, str]:
    """The event boxes by video key, and a sentence on where they came from (or why there are none)."""
    from pipeline.event_boxes import read_event_boxes

    if boxes is None:
        return None, "no boxes file: spatial metric not computed"
    with ShardReader(videos[0].shard) as reader:
        resize_mode = reader.attrs.resize_mode
    if resize_mode != "squash":
        return None, (f"{boxes}: boxes are fractions of the whole frame, but the test shards are center-cropped "
                      f"(the crop is not stored): spatial metric not computed")
    by_key = {video_key(name): frames for name, frames in read_event_boxes(Path(boxes)).items()}
    anomalous = [v.key for v in videos if frame_gt[v.key].any()]
    matched = sum(1 for key in anomalous if key in by_key)
    return by_key, f"boxes from {boxes}: {matched} of {len(anomalous)} anomalous test videos have them"


def _headline(results: list[dict], coverage: dict, partial: bool, metric: str = "auc") -> str:
    def fmt(value):
        return "n/a" if value is None else f"{value:.4f}"

    if metric == "ap":
        parts = [f"{r['name']}: frame AP {fmt(r['metrics']['ap'])} (step-wise; trapezoidal PR area "
                 f"{fmt(r['metrics']['ap_trapezoid'])}), AUC {fmt(r['metrics']['auc'])}" for r in results]
    else:
        parts = [f"{r['name']}: frame AUC {fmt(r['metrics']['auc'])}" for r in results]
    scope = f"{coverage['evaluated_videos']} of {coverage['annotated_videos']} annotated test videos"
    text = "; ".join(parts) + f" ({scope})"
    if partial:
        text = f"PARTIAL EVALUATION, {len(coverage['missing_from_shards'])} annotated videos missing from the shards. " + text
    return text


def _per_video_summary(videos: list[TestVideo], ground_truth: dict, frame_gt: dict,
                       frame_results: dict[str, list[VideoFrames]], convention: str) -> list[dict]:
    summary = []
    for i, v in enumerate(videos):
        entry = {
            "video": v.key, "label": ground_truth[v.key].label, "num_frames": v.num_source_frames,
            "stored_frames": v.stored_frames, "anomalous_frames": int(frame_gt[v.key].sum()),
            "anomalous_ranges": frame_ranges(ground_truth[v.key], convention),
            "scores": {},
        }
        for name, per_video in frame_results.items():
            scores = per_video[i].scores
            entry["scores"][name] = {"mean": float(scores.mean()), "max": float(scores.max())}
        summary.append(entry)
    return summary
