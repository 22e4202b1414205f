"""The HAT reproduction, declaration v2 (arXiv 2503.18989): v1's claims, arms, regimes, seeds and
verdict rule on a served model that is better than SD's draft.

Declared here, before any v2 run. What changed from v1 (:mod:`ml.reproduction.hat`) and why:

- **The served model.** v1's ``hat-12`` (12 blocks of width 32, BPE 512 on the 0.5 MB pydoc
  corpus, 300 steps of 8 x 320 tokens) had held-out perplexity 38.2 while device-cloud SD's
  2-block draft of the same width, BPE and steps had 34.8: the served model was worse than the
  draft, the reverse of the paper's setting (a 7B served LLM, a ~68M draft). It was
  under-trained: deep and narrow, few steps, a tiny corpus. v2 serves ``hat-12-cpython``
  (:mod:`ml.models.pretraining`): 12 blocks of width 64 (4 heads, SwiGLU 176), BPE 2,048 on
  the offline ``cpython`` corpus (10 MB: CPython's standard library and its pydoc topics; every
  tenth file held out), 320-token context, 1,000 steps of 8 x 320 tokens (0.9 pass over its
  2.9 M training tokens; about 7.5 CPU-minutes on one core).
- **SD's draft: the method's default budget, as in v1.** It stays what the method defines: 2
  blocks of the served model's width on the same corpus, BPE and context, pre-trained for
  ``draft_steps`` = 300 (the config default, which v1 ran too) with the size's other settings.
  Why not the served model's 1,000 steps: at equal steps the 2-block draft is *better* than the
  12-block model on this CPU budget (both measured, ``MEASURED``): a deep narrow model learns
  more slowly per step, and 1,000 steps is what ~7.5 CPU-minutes allow. The paper's draft is a
  small model trained with a small fraction of the served LLM's compute; at 300 steps ours gets
  about 1/12 of the served model's pre-training CPU time, which is still a far larger share than
  a 68M draft of a 7B LLM. HAT's adapter is distilled for 300 steps as well (its default, v1's),
  so both drafters get the same number of steps. The dashboard's launch carries HAT's config
  keys only, so its SD baseline gets the default too: the launch is the declared headline.
- **HAT's adapter** is v1's procedure (one block, 300 distillation steps) on the new model;
  it was still distilling when this declaration was committed, so its held-out agreement with
  the served model is measured by the runs (their ``models``), not before.
- **Prompts** are 256-token windows of the held-out cpython files (code and prose) in the new
  BPE; the seed draws them as in v1.
- **Regimes in priority order** (a stopped sweep keeps the first): the headline, then the
  regimes where v1's claims came closest (10 AGX Orin; 30 devices on a cloud at 10%), then the
  others, the 30-device ones (3x the cost) last. The set is v1's.

Everything else is v1's: claims (TTFT and TBT -41% against each baseline: paired ratio
baseline / HAT >= 1.69, 95% t-interval of the log ratio), the four arms, the clock
(``llama2-7b-proportional``: each part charged at the served LM's share of a Llama-2-7B's 32
layers; the draft charged as a 68M Llama), 256-token prompts, 32 greedy tokens, gamma 4, seeds
0-4.
"""
from __future__ import annotations

from ml.reproduction.declaration import Declaration
from ml.reproduction.hat import (ARMS, CLAIMS, DECLARATION as V1, FULL, HEADLINE, REGIMES,
                                 TARGET, run_config)

LM_SIZE = "hat-12-cpython"
#: SD's draft: the method's default steps (v1's), not the served model's 1,000.
DRAFT_STEPS = 300

#: Held-out perplexities measured before this declaration was committed (200 windows of 320
#: held-out tokens, the same for every model; the runs record the served model's and the
#: draft's again in their ``models``). v1's, on pydoc with BPE 512: served 38.2, draft 34.8.
MEASURED = {
    "served_val_perplexity": 50.56,  # hat-12-cpython, 1,000 steps, 0.87 M parameters
    "draft_val_perplexity": 85.70,  # 2 blocks of width 64, 300 steps (declared), 0.37 M
    "draft_1000_steps_val_perplexity": 44.99,  # the same draft at the served model's steps
    "unigram_val_perplexity": 581.5,
}

FULL_V2 = {**FULL, "lm_size": LM_SIZE, "draft_steps": DRAFT_STEPS}

#: v1's regimes, priority order (see the module docstring).
ORDER = ("mixed-10", "orin-10", "congested-30-10", "devices-1", "tx2-10", "nx-10", "rtt-10",
         "rtt-100", "uplink-10", "uplink-100", "congested-30", "devices-30")
REGIMES_V2 = tuple(next(r for r in REGIMES if r.key == key) for key in ORDER)

TARGET_V2 = {**TARGET, "lm_size": LM_SIZE, "draft_steps": DRAFT_STEPS}


def _setting() -> str:
    text = V1.setting
    for before, after in (
            ("held-out prompt (pydoc, BPE 512)",
             "held-out prompt (held-out CPython standard-library files, BPE 2,048)"),
            ("a 12-block decoder (0.19 M parameters)",
             "a 12-block decoder of width 64 (0.87 M parameters, 1,000 pre-training steps on "
             "the 10 MB cpython corpus)"),
            ("a separate 2-block draft LM (charged as a 68M Llama)",
             "a separate 2-block draft LM of the same width and corpus, pre-trained 300 "
             "steps (charged as a 68M Llama)")):
        if before not in text:
            raise ValueError(f"v1's setting no longer reads {before!r}")
        text = text.replace(before, after)
    return text


DECLARATION = Declaration(
    key="hat_v2",
    paper=V1.paper,
    arxiv=V1.arxiv,
    setting=_setting(),
    claims=CLAIMS,
    arms=ARMS,
    regimes=REGIMES_V2,
    headline=HEADLINE,
    seeds=V1.seeds,
    target=TARGET_V2,
    differences=(
        "Model: a 0.87 M-parameter 12-block BPE decoder pre-trained on a 10 MB corpus (0.9 "
        "pass) decides the tokens and the drafts' acceptance; the paper serves a real LLM (the "
        "abstract does not name it). The clock charges a Llama-2-7B shape, so times are a 7B "
        "model's but acceptance is the small model's. SD's draft is 2 blocks of the same width "
        "(0.37 M parameters, much of it the 2,048-token embedding and head), a larger share of "
        "the served model than a 68M draft of a 7B.",
        *V1.differences[1:],
        "Declared after v1's runs were seen: the change is the served model (chosen from "
        "held-out perplexities measured before this declaration, not from any latency); SD's "
        "draft keeps v1's 300 steps; claims, arms, regimes, seeds and the verdict rule are "
        "v1's. At equal steps (1,000) the 2-block draft would be better than the served model "
        "here (see MEASURED in ml/reproduction/hat_v2.py): the served model leads only "
        "because it trains longer, as a 7B LLM does against a 68M draft.",
    ),
    launch={"algorithm": "hat", "baselines": list(V1.launch["baselines"]),
            # HAT's keys only (the API passes baselines what HAT knows): draft_steps is the
            # default, so SD launched from the page trains the declared draft
            "config": {k: v for k, v in run_config(REGIMES_V2[0], FULL_V2, 0).items()
                       if k not in ("seed", "draft_steps")}},
    version=2,
    supersedes={"hat": (
        "v1's served model (hat-12: 12 blocks of width 32, 300 steps on the 0.5 MB pydoc "
        "corpus) had held-out perplexity 38.2 against 34.8 for SD's 2-block draft: the served "
        "model was worse than the draft, so the drafts' acceptance (HAT's adapter and SD's "
        "draft) did not come from a setting like the paper's. v2 serves a 12-block width-64 "
        "model pre-trained on the cpython corpus for 1,000 steps; SD's draft (same width and "
        "corpus) keeps the method's default 300 steps, as in v1.")},
)
