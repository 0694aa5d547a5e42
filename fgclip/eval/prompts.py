"""Prompt scoring: the one owner of how a model's image embeddings become anomaly scores.

Evaluation's frame scores, the patch maps, validation during training and `fgclip-vad score` all
import this module (and it imports none of them):

* `class_prompts`: the prompt sentences, {normal} + each class, several templates per row;
* `prompt_embeddings`: their text embeddings, templates averaged in embedding space;
* `prompt_logits`: a model's scale x cosine(image, prompt);
* `anomaly_scores`: the family's rule (`ANOMALY_SCORE_DEFINITIONS`): 1 - softmax(...)[normal] for
  InfoNCE models, normal's share of the sigmoid probabilities for the SigLIP 2 family.
"""

from __future__ import annotations

from typing import Sequence

import torch

from fgclip.eval.ground_truth import camel_case_to_words

# Averaged in embedding space per class; "{}" becomes the class phrase ("road accidents").
PROMPT_TEMPLATES = (
    "a video frame of {}.",
    "a surveillance camera frame of {}.",
    "a cctv image showing {}.",
    "a photo of {}.",
)
NORMAL_PHRASE = "normal activity"


def class_prompts(class_names: Sequence[str], templates: Sequence[str] = PROMPT_TEMPLATES,
                  normal_phrase: str = NORMAL_PHRASE) -> list[list[str]]:
    """Prompt sentences per row: row 0 is normal, row 1 + i is class_names[i]."""
    if not templates:
        raise ValueError("at least one prompt template is needed")
    bad = [t for t in templates if t.count("{}") != 1]
    if bad:
        raise ValueError(f"prompt templates need exactly one '{{}}' for the class phrase: {bad}")
    phrases = [normal_phrase] + [camel_case_to_words(name) for name in class_names]
    return [[template.format(phrase) for template in templates] for phrase in phrases]


@torch.inference_mode()
def prompt_embeddings(model, tokenizer, class_names: Sequence[str], *, device: torch.device,
                      templates: Sequence[str] = PROMPT_TEMPLATES, normal_phrase: str = NORMAL_PHRASE) -> torch.Tensor:
    """(1 + C, D) float32, L2-normalised: each row the normalised mean of its templates' embeddings.

    Prompts take the family's inference path: with the tokenizer's attention mask, as FG-CLIP 2's
    published inference encodes text (CLIP's causal tower needs none); training captions go without
    it, as FG-CLIP 2's training does."""
    prompts = class_prompts(class_names, templates, normal_phrase)
    flat = [sentence for row in prompts for sentence in row]
    ids, mask = model.text_rules.ids_and_mask(tokenizer, flat, "short")
    embeds = model.encode_text(ids.to(device), "short", attention_mask=mask.to(device))
    embeds = embeds.float().view(len(prompts), len(templates), -1)
    return torch.nn.functional.normalize(embeds.mean(dim=1), dim=-1)


# How each objective's model turns prompt logits into an anomaly score (the report states it).
ANOMALY_SCORE_DEFINITIONS = {
    "infonce": "1 - softmax(global scale * cosine(frame, prompts))[normal], prompts = {normal} + classes, "
               "templates averaged in embedding space",
    "sigmoid": "p = sigmoid(global scale * cosine(frame, prompt) + global bias) for each prompt of {normal} + classes "
               "(templates averaged in embedding space), each the model's own probability that the prompt matches; "
               "score = 1 - p[normal] / sum(p), the share of the matching probability not given to normal; "
               "scale and bias as stored (never clamped); prompts encoded on FG-CLIP 2's inference path (the "
               "tokenizer's attention mask blocks padding, last position pooled), training captions on its "
               "training path (no mask)",
}


def prompt_logits(embeds: torch.Tensor, prompt_embeds: torch.Tensor, temperature: torch.Tensor) -> torch.Tensor:
    """(..., D) image embeddings (frames or patches) x (1 + C, D) prompts -> (..., 1 + C) float32
    scaled similarities; the top class of a frame is the argmax of its class columns (1:)."""
    return temperature * (embeds.float() @ prompt_embeds.float().t())


def anomaly_scores(frame_embeds: torch.Tensor, prompt_embeds: torch.Tensor, temperature: torch.Tensor, *,
                   objective: str = "infonce", bias: torch.Tensor | None = None) -> torch.Tensor:
    """(..., D) frames or patches x (1 + C, D) prompts -> (...) anomaly scores in float32
    (ANOMALY_SCORE_DEFINITIONS). The one place prompt similarities become scores: frame scores,
    patch maps (`fgclip.eval.patch_map`) and `fgclip-vad score` all go through it.

    The sigmoid family's prompts are independent yes/no questions: their probabilities need not
    sum to 1, so the score is normal's share of their sum (computed in log space: with SigLIP's
    bias near -10 each probability is tiny)."""
    logits = prompt_logits(frame_embeds, prompt_embeds, temperature)
    if objective == "infonce":
        return 1.0 - logits.softmax(dim=-1)[..., 0]
    if objective != "sigmoid" or bias is None:
        raise ValueError(f"anomaly_scores: objective {objective!r} (bias {'given' if bias is not None else 'missing'}) "
                         f"is not one of {', '.join(ANOMALY_SCORE_DEFINITIONS)} with its parameters")
    log_p = torch.nn.functional.logsigmoid(logits + bias.float())
    return 1.0 - (log_p[..., 0] - torch.logsumexp(log_p, dim=-1)).exp()
