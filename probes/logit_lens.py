"""Logit lens: decode the residual stream of every layer at every position, image patches included.

Each layer's state goes through the model's own final norm and unembedding (the adapter's
``lens``), so at the last layer the lens *is* the model's output distribution. The sweep runs
in chunks of positions, so memory holds at most ``chunk x vocabulary`` probabilities at once.

Which layers are decoded at every position: each costs ``2 x d x vocabulary`` FLOPs per
position, against about ``2 x parameters`` for the model's forward; with a large vocabulary
that is most of the cost (Qwen2-VL-2B: 28 layers x 152k words, 2.2x a forward). By default
(:func:`lens_layers`) the lens decodes every layer when all of them cost at most
``SWEEP_BUDGET`` forwards by that count, and otherwise that many layers evenly spaced from the
first to the last (the last always: there the lens equals the model's output). Every
generated token's trajectory is decoded at every layer (it is one position per token);
``all_layers=True`` decodes every layer everywhere.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from probes.base import Probe, ProbeParams, ProbeRequest, check_range
from probes.layout import LayoutResult, layout_of
from probes.runs import Run, get_run

SWEEP_BUDGET = 1.5  # forwards' worth of FLOPs the default sweep may cost
EXP_FLOOR = -87.0  # exp(-87) = 1.65e-38, just above float32's smallest normal number (1.18e-38)


class Softmax:
    """Softmax over the last dimension of successive chunks of logits, written into one float32
    buffer reused from chunk to chunk (each result is valid until the next call).

    ``torch.softmax(logits.float())`` allocates two fresh [rows x vocabulary] float tensors per
    chunk; at a 152k vocabulary, 256 rows, that is 156 MB each, and on a CPU most of the softmax's
    time went to faulting in their fresh pages (117 ms against 59 ms here for one chunk of a
    bfloat16 Qwen2-VL-2B-shaped unembedding, /tmp micro-benchmark). The values are the same
    ``exp(x - max) / sum`` (within 4e-6 relative of ``torch.softmax``).

    One departure, below float32's resolution: ``x - max`` is floored at ``EXP_FLOOR`` before
    the exponential. torch's CPU ``exp`` takes a slow path for every argument whose result is
    subnormal (below -87.3): 10 to 15 times slower over a chunk with such words (/tmp
    micro-benchmark, 256 x 151,936 float32: 19 ms in range, 160 to 300 ms with arguments down to
    -100 or -1000), and a random-weight Qwen2-VL-2B shape puts 4.7% of its words there, which made
    the exponential and the sum the larger half of the lens's time. A word more than 87 below the
    row's top gets probability ``exp(-87) / sum`` <= 1.7e-38 instead of its subnormal value or 0;
    every other probability is unchanged (adding at most 151,936 x 1.7e-38 to a sum of at least
    1 leaves it the same float32)."""

    def __init__(self) -> None:
        self.buffer: torch.Tensor | None = None

    def __call__(self, logits: torch.Tensor) -> torch.Tensor:
        size = logits.numel()
        if self.buffer is None or self.buffer.numel() < size or self.buffer.device != logits.device:
            self.buffer = torch.empty(size, dtype=torch.float32, device=logits.device)
        out = self.buffer[:size].view(logits.shape)
        out.copy_(logits)
        out.sub_(out.amax(-1, keepdim=True)).clamp_min_(EXP_FLOOR).exp_()
        return out.div_(out.sum(-1, keepdim=True))


def lens_layers(session, n_layers: int, all_layers: bool = False) -> list[int]:
    """The layers decoded at every position: all of them, or (when that would cost more than
    ``SWEEP_BUDGET`` forwards by a FLOP count) that budget's worth evenly spaced, first and last
    included."""
    unembedding = session.adapter.unembedding()
    per_layer = unembedding.in_features * unembedding.out_features
    affordable = int(SWEEP_BUDGET * sum(p.numel() for p in session.model.parameters()) / per_layer)
    k = max(2, affordable)
    if all_layers or k >= n_layers or n_layers < 2:
        return list(range(n_layers))
    return sorted({round(i * (n_layers - 1) / (k - 1)) for i in range(k)})


@dataclass(frozen=True)
class LogitLensParams(ProbeParams):
    """``all_layers``: decode every layer at every position, whatever it costs (default: the
    layers :func:`lens_layers` affords)."""

    top_k: int = 5
    chunk: int = 256
    all_layers: bool = False

    def __post_init__(self) -> None:
        check_range("top_k", self.top_k, 1, 50)
        check_range("chunk", self.chunk, 1, 65536)


@dataclass
class LogitLensResult(LayoutResult):
    """Arrays (L layers, D decoded layers ``layers``, S positions, k top tokens, T tracked tokens
    = distinct answer tokens):

    - ``top_ids`` [D, S, k] int64, ``top_probs`` [D, S, k] float32: each decoded layer's top-k at each position;
    - ``target_ids`` [T] int64 and ``target_probs`` [D, S, T] float32: tracked tokens' probabilities;
    - ``answer_probs`` / ``answer_ranks`` [L, A]: each generated token's probability and rank
      (0 = top) at the position that predicts it, at every layer (its emergence trajectory).
    ``words`` maps every token id that appears to its string.
    """

    answer_ids: list[int]
    words: dict
    layers: list[int]
    top_ids: np.ndarray
    top_probs: np.ndarray
    target_ids: np.ndarray
    target_probs: np.ndarray
    answer_probs: np.ndarray
    answer_ranks: np.ndarray
    probe = "logit_lens"

    def target_index(self, token_id: int) -> int:
        return int(np.flatnonzero(self.target_ids == token_id)[0])

    def decoded(self, layer: int) -> int:
        """The row of the decoded layer nearest ``layer`` (itself when it was decoded)."""
        return int(np.argmin([abs(decoded - layer) for decoded in self.layers]))


def sweep(session, hidden: torch.Tensor, targets: torch.Tensor, top_k: int, chunk: int):
    """Top-k and tracked-token probabilities for hidden [layers, S, d], ``chunk`` positions at a time."""
    layers, seq, _ = hidden.shape
    top_ids = torch.empty(layers, seq, top_k, dtype=torch.long)
    top_probs = torch.empty(layers, seq, top_k)
    target_probs = torch.empty(layers, seq, len(targets))

    softmax = Softmax()

    def decode() -> None:
        for layer in range(layers):
            for start in range(0, seq, chunk):
                probs = softmax(session.adapter.lens(hidden[layer, start:start + chunk]))
                values, indices = probs.topk(top_k, dim=-1)
                top_ids[layer, start:start + chunk] = indices.cpu()
                top_probs[layer, start:start + chunk] = values.cpu()
                target_probs[layer, start:start + chunk] = probs[:, targets].cpu()
    session.call(decode)  # the final norm and unembedding are the model's: a model call like any other
    return top_ids, top_probs, target_probs


def ranks_above(logits: torch.Tensor, chosen: torch.Tensor) -> torch.Tensor:
    """[L, A] int32 count of words scoring above ``chosen`` [L, A, 1] in ``logits`` [L, A, V].

    One layer at a time, so the comparison's [A x V] booleans stay in cache between the compare
    and the count: over all layers at once (a 68 MB boolean tensor at 28 layers x 16 tokens x
    152k words) the count took 258 ms against 47 ms here (/tmp micro-benchmark, 2 threads)."""
    return torch.stack([(layer > top).sum(-1, dtype=torch.int32) for layer, top in zip(logits, chosen)])


def answer_trajectory(session, run: Run, chunk: int = 16) -> tuple[np.ndarray, np.ndarray]:
    """[L, A] probability and rank of each generated token where it is predicted, ``chunk``
    answer tokens at a time (memory holds at most layers x chunk x vocabulary scores)."""
    positions = [run.predicting_position(i) for i in range(len(run.answer_positions))]
    ids = torch.tensor([run.token_map.input_ids[p] for p in run.answer_positions], dtype=torch.long)
    probs, ranks = [], []
    softmax = Softmax()

    def decode() -> None:
        for start in range(0, len(positions), chunk):
            logits = session.adapter.lens(run.hidden[:, positions[start:start + chunk]])
            wanted = ids[start:start + chunk].to(logits.device).expand(logits.shape[0], -1)[..., None]
            chosen = logits.gather(-1, wanted)
            ranks.append(ranks_above(logits, chosen).cpu())
            probs.append(softmax(logits).gather(-1, wanted)[..., 0].cpu())
    session.call(decode)
    if not probs:
        return np.zeros((run.hidden.shape[0], 0), np.float32), np.zeros((run.hidden.shape[0], 0), np.int32)
    return torch.cat(probs, 1).numpy().astype(np.float32), torch.cat(ranks, 1).numpy().astype(np.int32)


class LogitLens(Probe):
    name = "logit_lens"
    description = "every layer x every position decoded through the final norm and unembedding"
    params_class = LogitLensParams

    def run(self, session, request: ProbeRequest, params: LogitLensParams) -> LogitLensResult:
        run = get_run(session, request)
        answer_ids = [run.token_map.input_ids[p] for p in run.answer_positions]
        targets = torch.tensor(sorted(set(answer_ids)), dtype=torch.long)
        layers = lens_layers(session, run.hidden.shape[0], params.all_layers)
        top_ids, top_probs, target_probs = sweep(session, run.hidden[layers], targets, params.top_k, params.chunk)
        run.memo["tracked"] = (layers, targets, target_probs)  # the detector reads its words' probabilities here
        answer_probs, answer_ranks = answer_trajectory(session, run)
        seen = set(top_ids.flatten().tolist()) | set(targets.tolist())
        return LogitLensResult(
            **layout_of(run), answer_ids=answer_ids, words={str(i): session.decode_token(i).strip() for i in sorted(seen)},
            layers=layers,
            top_ids=top_ids.numpy(), top_probs=top_probs.numpy().astype(np.float32),
            target_ids=targets.numpy(), target_probs=target_probs.numpy().astype(np.float32),
            answer_probs=answer_probs, answer_ranks=answer_ranks)
