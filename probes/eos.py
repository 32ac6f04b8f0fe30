"""EOS decision: how likely the model is to end its answer at every generated step, layer by layer.

After Yue, Zhang & Jin (ACL 2024), "Less is More: Mitigating Multimodal Hallucination from an
EOS Decision Perspective": a model that names objects past what it can see has decided too
late to stop. The paper reads the end-of-sequence token's probability at the model's output;
this probe reads it at every decoder layer through the logit lens (the model's own final norm
and unembedding, :meth:`Adapter.lens`, exactly as :mod:`probes.logit_lens` does), so at the
last layer it is the model's own distribution.

Departure from the paper, named: "ending" is the EOS token(s) **and** the tokenizer's full stop
(``.``), summed, because a caption ends its list with a full stop one step before EOS (in the
embedded world model ``.`` is always followed by EOS, so the decision is taken at the ``.``).
The ids come from the session (its generation and tokenizer EOS) and the tokenizer's vocabulary
(the piece ``.``, bare or with a word-start marker); a tokenizer without a ``.`` piece gives EOS
alone. How much of the ground truth is already named at each step needs ground truth, so it is
measured by the world study (:mod:`studio.world.eos_eval`), not here.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from probes.base import Probe, ProbeParams, ProbeRequest, ProbeResult, check_range
from probes.logit_lens import Softmax
from probes.runs import Run
from studio.engine.errors import StudioError

STOP_PIECES = (".", "Ġ.", "▁.")  # the full stop bare, and with the byte-level / sentencepiece word-start marker


@dataclass(frozen=True)
class EosParams(ProbeParams):
    chunk: int = 16  # steps decoded at a time: memory holds layers x chunk x vocabulary probabilities

    def __post_init__(self) -> None:
        check_range("chunk", self.chunk, 1, 4096)


@dataclass
class EosResult(ProbeResult):
    """Arrays (L layers, T steps = answer tokens + 1, E end tokens):

    - ``end_ids`` [E] int64: the EOS ids (first ``n_eos``), then the full-stop ids;
    - ``p_end`` [L, T] float32: lens probability of ending (summed over ``end_ids``) at the
      position that predicts step ``t``; step ``T - 1`` follows the last answer token (where the
      model ended, or would have gone on past ``max_new_tokens``);
    - ``p_ids`` [L, T, E] float32: each end token's own probability;
    - ``step_ids`` [T] int64: the token taken at each step (the answer, then the model's own
      top token at the last step).
    """

    prompt: str
    answer: str
    n_eos: int
    end_tokens: list[str]
    steps: list[str]
    end_ids: np.ndarray
    step_ids: np.ndarray
    p_end: np.ndarray
    p_ids: np.ndarray
    probe = "eos"

    @property
    def p_eos(self) -> np.ndarray:
        """[L, T] probability of the EOS tokens alone."""
        return self.p_ids[..., :self.n_eos].sum(-1)


def eos_token_ids(session) -> list[int]:
    """The ids that end generation, without the image placeholder (a guard, not an end of text)."""
    try:
        image = session.adapter.image_token_id()
    except StudioError:
        image = None
    return [i for i in session.eos_ids if i != image]


def stop_token_ids(tokenizer, vocab_size: int) -> list[int]:
    """The tokenizer's full-stop pieces (below ``vocab_size``), in :data:`STOP_PIECES` order."""
    vocab = tokenizer.get_vocab()
    ids = [vocab[p] for p in STOP_PIECES if p in vocab]
    return [i for i in dict.fromkeys(ids) if i < vocab_size]


def end_token_ids(session) -> tuple[list[int], int]:
    """(EOS ids then full-stop ids, number of EOS ids), for ``session``'s model."""
    eos = eos_token_ids(session)
    stops = [i for i in stop_token_ids(session.tokenizer, session.adapter.unembedding().out_features)
             if i not in eos]
    return eos + stops, len(eos)


def step_positions(run: Run) -> list[int]:
    """The position predicting each step: every answer token, then the step after the last one."""
    start = run.prepared.length - 1
    return list(range(start, start + len(run.answer_positions) + 1))


def end_probabilities(session, run: Run, end_ids: list[int], chunk: int) -> tuple[torch.Tensor, int]:
    """([L, T, E] lens probabilities of ``end_ids`` at every step, the last step's top token id)."""
    positions = step_positions(run)
    ids = torch.tensor(end_ids, dtype=torch.long)
    parts: list[torch.Tensor] = []
    last: list[int] = []

    softmax = Softmax()

    def decode() -> None:
        for start in range(0, len(positions), chunk):
            probs = softmax(session.adapter.lens(run.hidden[:, positions[start:start + chunk]]))
            parts.append(probs[..., ids.to(probs.device)].cpu())
            last[:] = [int(probs[-1, -1].argmax())]
    session.call(decode)  # the final norm and unembedding are the model's: a model call like any other
    return torch.cat(parts, dim=1), last[0]


class Eos(Probe):
    name = "eos"
    description = "probability of ending (EOS and the full stop) at every generated step, by layer"
    params_class = EosParams

    def run(self, session, request: ProbeRequest, params: EosParams) -> EosResult:
        run = self.cached_run(session, request)
        end_ids, n_eos = end_token_ids(session)
        p_ids, last = end_probabilities(session, run, end_ids, params.chunk)
        step_ids = [run.token_map.input_ids[p] for p in run.answer_positions] + [last]
        return EosResult(
            prompt=run.prepared.prompt, answer=run.generation.text, n_eos=n_eos,
            end_tokens=[session.decode_token(i).strip() for i in end_ids],
            steps=[session.decode_token(i).strip() for i in step_ids],
            end_ids=np.asarray(end_ids, dtype=np.int64), step_ids=np.asarray(step_ids, dtype=np.int64),
            p_end=p_ids.sum(-1).numpy().astype(np.float32), p_ids=p_ids.numpy().astype(np.float32))
