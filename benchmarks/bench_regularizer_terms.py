"""Which term of the Q-Score regulariser acts? (issue 24 item 2; Q-Score paper eq. 3)

R = λ1 Σ_{i: Q_i < α} Q_i  +  λ2 Σ_{k: ‖H_k‖_1 > β} ‖H_k‖_1. At the paper's λ1 = λ2 = 1e-4 this prints, on
synthetic ReLU batches (B = 256), the L2 norms of each term's gradient with respect to the representations h
(``solo_qscore.regularizer_term_gradient_norms``, the same numbers training logs as
``train_qscore_q_grad_norm`` / ``train_qscore_l1_grad_norm``) and their ratio, averaged over 3 seeds, with D the
discriminative band of the batch's own activation frequencies.

    .venv/bin/python benchmarks/bench_regularizer_terms.py      # seconds on a CPU
"""

from __future__ import annotations

import argparse
import sys

import torch

from solo_qscore import (
    discriminative_mask,
    highly_activating,
    qscore_regularizer_terms,
    regularizer_term_gradient_norms,
)

BATCHES = {
    "relu(N(0,1))": lambda b, r, g: torch.randn(b, r, generator=g).relu(),
    "relu(N(0,1) x LogN column scales)": lambda b, r, g: (torch.randn(b, r, generator=g)
                                                          * torch.randn(r, generator=g).exp()).relu(),
}


def term_norms(h: torch.Tensor, eps: float, lam1: float, lam2: float) -> tuple[float, float, float, float]:
    """(‖∂Q-term/∂h‖, ‖∂L1-term/∂h‖, their ratio, fraction of rows with Q > 0) of one batch."""
    h = h.clone().requires_grad_(True)
    D = discriminative_mask(100.0 * highly_activating(h.detach(), eps).double().mean(0))
    terms = qscore_regularizer_terms(h, D, eps=eps, lambda1=lam1, lambda2=lam2)
    norms = regularizer_term_gradient_norms(h, terms)
    return float(norms.qscore), float(norms.l1), float(norms.ratio), float((terms.q > 0).double().mean())


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--features", type=int, nargs="+", default=[512, 2048])
    p.add_argument("--eps", type=float, nargs="+", default=[4.0, 2.0, 1.0])
    p.add_argument("--lambdas", type=float, nargs=2, default=[1e-4, 1e-4], help="λ1 λ2 (paper: 1e-4 1e-4)")
    p.add_argument("--seeds", type=int, default=3)
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    print("| batch | r | ε | ‖∂Q-term/∂h‖ | ‖∂L1-term/∂h‖ | ratio Q/L1 (mean of seeds) | rows with Q > 0 |")
    print("|---|---|---|---|---|---|---|")
    for name, make in BATCHES.items():
        for r in args.features:
            for eps in args.eps:
                runs = [term_norms(make(args.batch, r, torch.Generator().manual_seed(s)), eps, *args.lambdas)
                        for s in range(args.seeds)]
                mean = [sum(x[k] for x in runs) / len(runs) for k in range(4)]
                ratio = f"{mean[2]:.2e} (1/{1 / mean[2]:,.0f})" if mean[2] > 0 else "0 (the Q term does not act)"
                print(f"| {name} | {r} | {eps:g} | {mean[0]:.2e} | {mean[1]:.2e} | {ratio} | {100 * mean[3]:.1f} % |",
                      flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
