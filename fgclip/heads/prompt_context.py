"""Class names with learnable prompt context, through a model's own frozen text tower (CoOp-style,
as VadCLIP's vision-language branch): each class prompt is `[ctx_1..ctx_p] <class words>
[ctx'_1..ctx'_q]` between the tokenizer's own start and end tokens, the context vectors shared by all classes and learned in the token-embedding
space; the tower itself (either family, `VideoModel.encode_text` with `token_embeds`) never
changes."""

from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor, nn

TEXT_KIND = "short"  # prompts are short text in both families


class PromptContextError(ValueError):
    """A tokenizer or text tower the prompt context cannot be built on; the message says what to do."""


def insert_context_slots(ids: Tensor, mask: Tensor, special_ids: set[int], prefix: int,
                         postfix: int) -> tuple[Tensor, Tensor, Tensor]:
    """Room for the context vectors in tokenized prompts (C, L): `prefix` slots before each row's
    first word token (mask 1, not a special token), `postfix` after its last; the rest shifts right
    into the padding, the length stays L. Returns (ids, mask, slots), slots True at context positions;
    a slot's id is the row's first word token (its embedding is replaced; special ids such as the end
    token, which the CLIP tower pools at, must not appear there)."""
    rows, length = ids.shape
    new_ids, new_mask, slots = ids.clone(), mask.clone(), torch.zeros_like(ids, dtype=torch.bool)
    for row in range(rows):
        words = [i for i in range(length) if mask[row, i] and int(ids[row, i]) not in special_ids]
        if not words:
            raise PromptContextError(f"prompt {row}: no word token after tokenizing")
        first, last = words[0], words[-1]
        used = int(mask[row].sum())
        if used + prefix + postfix > length and int(mask[row, -1]):
            raise PromptContextError(f"prompt {row}: {used} tokens + {prefix + postfix} context slots exceed the "
                                     f"text length {length}: use fewer context tokens")
        slot = ids[row, first:first + 1]
        pieces = [ids[row, :first], slot.repeat(prefix), ids[row, first:last + 1], slot.repeat(postfix), ids[row, last + 1:]]
        masks = [mask[row, :first], torch.ones(prefix, dtype=mask.dtype), mask[row, first:last + 1],
                 torch.ones(postfix, dtype=mask.dtype), mask[row, last + 1:]]
        new_ids[row] = torch.cat(pieces)[:length]
        new_mask[row] = torch.cat(masks)[:length]
        slots[row, first:first + prefix] = True
        after = first + prefix + (last - first + 1)
        slots[row, after:after + postfix] = True
    return new_ids, new_mask, slots


class LearnablePromptText(nn.Module):
    """Text embeddings (C, D) of the class prompts, differentiable in the context vectors only."""

    def __init__(self, model, tokenizer, class_phrases: Sequence[str], *, prefix: int = 10, postfix: int = 10,
                 init_std: float = 0.02) -> None:
        super().__init__()
        # frozen and not a submodule: neither the optimizer nor the head's state dict holds the tower
        # (it is loaded from its own directory); `to_device` moves it beside the head
        object.__setattr__(self, "tower", model)
        for parameter in model.parameters():
            parameter.requires_grad_(False)
        model.eval()
        ids, mask = model.text_rules.ids_and_mask(tokenizer, list(class_phrases), TEXT_KIND)
        ids, mask, slots = insert_context_slots(ids, mask, set(tokenizer.all_special_ids), prefix, postfix)
        self.register_buffer("input_ids", ids, persistent=False)
        self.register_buffer("attention_mask", mask, persistent=False)
        self.register_buffer("slots", slots, persistent=False)
        width = model.text_token_embedding().embedding_dim
        self.prefix = nn.Parameter(torch.randn(prefix, width) * init_std)
        self.postfix = nn.Parameter(torch.randn(postfix, width) * init_std)

    def _apply(self, fn, *args, **kwargs):  # .to(device) / .float() move the frozen tower too
        self.tower._apply(fn, *args, **kwargs)
        return super()._apply(fn, *args, **kwargs)

    def forward(self) -> Tensor:
        tokens = self.tower.text_token_embedding()(self.input_ids)
        context = torch.cat([self.prefix, self.postfix]).to(tokens.dtype)
        classes = self.input_ids.shape[0]
        tokens = tokens.masked_scatter(self.slots[..., None], context.repeat(classes, 1))
        return self.tower.encode_text(self.input_ids, TEXT_KIND, attention_mask=self.attention_mask,
                                           token_embeds=tokens)
