"""DiLoCo, Streaming DiLoCo and CoCoDC: cross-region training of a decoder LM on an emulated WAN.

Papers: DiLoCo (arXiv 2311.08105), Streaming DiLoCo (arXiv 2501.18512), CoCoDC (arXiv
2504.17672). Formulas follow the CoCoDC authors' code (``isaacveg/crosstrain``); see
docs/methods/diloco.md. All three are settings of one outer loop (:mod:`.outer_loop`), run as
one role program (:mod:`.roles`: one rank per region) emulated or distributed.

DiLoCo, per outer round:
1. every region m starts from the global model θ̃;
2. runs H inner AdamW steps on its shard (clip 1.0);
3. all-reduces the pseudo-gradient Δ = mean_m (θ̃ − θ_m) — blocking, its WAN time is charged to
   every region's clock;
4. takes the outer Nesterov SGD step on θ̃ and 5. replaces the replicas by it.

Streaming DiLoCo:
1. splits the model into P fragments (layer units strided: unit i → fragment i mod P);
2. sends fragment p at steps t ≡ p·⌊H/P⌋ (mod H): snapshot s_p, Δ_p = θ̃_p − s_p, optionally
   quantised to 4 or 8 bits;
3. keeps training τ steps while the reduce is in flight (τ = ⌈reduce time / step time⌉);
4. on arrival takes fragment p's own outer Nesterov step and merges
   θ_p ← α·θ_p + (1 − α)·θ̃_p.

CoCoDC:
1. as Streaming DiLoCo 1-3, but
2. Adaptive Transmission picks the fragment to send every ⌊H/N⌋ steps: stale (I_p ≥ H) first,
   never-sent next, else the largest Σ_m ‖θ̃_p − θ_{m,p}‖₁ / (I_p·|p|);
3. on arrival, delay compensation replaces the merge:
   θ_p ← θ̃_p + Δ_loc − λ₀‖Δ_loc‖·c/‖c‖, c = Δ_loc ⊙ Δ_loc ⊙ (θ̃_p − s_p), per tensor.

Ours [I] (details the papers leave open, chosen by us; each is documented where implemented):
- in-flight fragments are never chosen by Adaptive Transmission, and the stalest stale fragment
  goes first (:mod:`.transmission`);
- N = ⌊H / τ_max⌋ from the link, τ_max the largest fragment's reduce in steps (:mod:`.policies`);
- the 1/η_in of the authors' correction is dropped, it cancels (:mod:`.compensation`);
- the integer 4/8-bit code with a per-tensor scale instead of FP4 (:mod:`.quantization`);
- the ring all-reduce time model and the stand-in workload scale of the clock (:mod:`.wan`);
- the model's layer units and the placement of embedding, norm and head among them, as the
  authors' code lists them (:mod:`.fragments`).
"""
from ml.algorithms.cross_region.methods import COCODC, DILOCO, STREAMING_DILOCO

__all__ = ["COCODC", "DILOCO", "STREAMING_DILOCO"]
