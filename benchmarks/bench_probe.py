"""The linear probe (full-batch L-BFGS in torch) against scikit-learn's LogisticRegression(lbfgs).

    python benchmarks/bench_probe.py [--checkpoint runs/main/checkpoints/last.ckpt] [--n-train 20000]

Both fit the same objective (multinomial logistic regression, L2 weight lambda, i.e. sklearn's
C = 1 / (lambda * N)) on the same cached, standardised features with the same iteration budget.
Features: the backbone of a solo-qscore checkpoint on Fashion-MNIST when --checkpoint is given,
otherwise Fashion-MNIST pixels (784 features). Prints accuracy of both, the difference (target:
within 0.5 points) and the speed ratio (target: ours >= 5x faster), three ways:

* equal budget: both stop after ``--max-iter`` L-BFGS iterations (the probe's default, 100);
* to convergence: both run until their gradient tolerance (ours ``tolerance_grad=1e-5`` on the
  mean loss, in its preconditioned coordinates; sklearn ``tol=1e-5``) or ``--converged-max-iter``;
  the final objective of both is printed so that "converged" can be checked, not assumed;
* the probe as users get it (defaults, from the first table) against sklearn's converged answer
  (from the second).

Each table also has a row for our probe without its preconditioner (``precondition=False``), to
show what the preconditioner buys.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from solo_qscore.probe.linear import fit_linear_probe


def pixel_features(n_train: int, n_test: int):
    from solo_qscore.data import load_dataset

    train, test = load_dataset("fashion_mnist", train=True), load_dataset("fashion_mnist", train=False)

    def flat(ds, n):
        images = torch.as_tensor(np.asarray(ds.images[:n]), dtype=torch.float32).reshape(n, -1) / 255.0
        return images, torch.as_tensor(ds.targets[:n])

    return (*flat(train, n_train), *flat(test, n_test))


def checkpoint_features(path: str, n_train: int, n_test: int):
    from solo_qscore.cli.open_run import load_checkpoint, with_overrides
    from solo_qscore.data import make_eval_loaders
    from solo_qscore.probe.backbone import find_backbone
    from solo_qscore.probe.features import extract_features

    model, view, _ = load_checkpoint(path)
    cfg = with_overrides(view, [f"data.train_subset={n_train}", f"data.val_subset={n_test}", "data.num_workers=2"])
    train_loader, test_loader = make_eval_loaders(cfg["data"])
    backbone = find_backbone(model)
    return (*extract_features(backbone, train_loader, torch.device("cpu")),
            *extract_features(backbone, test_loader, torch.device("cpu")))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--checkpoint", help="solo-qscore checkpoint whose backbone gives the features")
    parser.add_argument("--n-train", type=int, default=20000)
    parser.add_argument("--n-test", type=int, default=5000)
    parser.add_argument("--weight-decay", type=float, default=1e-4)
    parser.add_argument("--max-iter", type=int, default=100)
    parser.add_argument("--converged-max-iter", type=int, default=2000)
    parser.add_argument("--skip-converged", action="store_true")
    args = parser.parse_args()
    if args.checkpoint:
        xtr, ytr, xte, yte = checkpoint_features(args.checkpoint, args.n_train, args.n_test)
        source = f"backbone features of {args.checkpoint}"
    else:
        xtr, ytr, xte, yte = pixel_features(args.n_train, args.n_test)
        source = "Fashion-MNIST pixels"

    print(f"features: {source}, train {tuple(xtr.shape)}, test {tuple(xte.shape)}, "
          f"lambda {args.weight_decay}, {torch.get_num_threads()} threads")
    budget = compare(xtr, ytr, xte, yte, args.weight_decay, args.max_iter, 1e-6,
                     f"equal budget: {args.max_iter} iterations")
    if not args.skip_converged:
        converged = compare(xtr, ytr, xte, yte, args.weight_decay, args.converged_max_iter, 1e-5,
                            f"to convergence (tolerance 1e-5, at most {args.converged_max_iter} iterations)")
        print(f"\nthe default probe ({args.max_iter} iterations) against sklearn's converged fit")
        verdict(100 * (budget["ours"][0] - converged["sklearn"][0]), converged["sklearn"][1] / budget["ours"][1])


def objective(z: np.ndarray, y: np.ndarray, coef: np.ndarray, intercept: np.ndarray, weight_decay: float) -> float:
    """Mean cross-entropy + lambda/2 ||W||^2 (the objective both solvers minimise), in float64."""
    logits = torch.as_tensor(z, dtype=torch.float64) @ torch.as_tensor(coef, dtype=torch.float64).T
    logits = logits + torch.as_tensor(intercept, dtype=torch.float64)
    ce = torch.nn.functional.cross_entropy(logits, torch.as_tensor(y))
    return float(ce + 0.5 * weight_decay * (torch.as_tensor(coef, dtype=torch.float64) ** 2).sum())


def compare(xtr, ytr, xte, yte, weight_decay: float, max_iter: int, tol: float, title: str) -> dict:
    import warnings

    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression

    t0 = time.perf_counter()
    probe = fit_linear_probe(xtr, ytr, weight_decay=weight_decay, max_iter=max_iter, tolerance_grad=tol)
    t_ours = time.perf_counter() - t0
    acc_ours = float((probe.predict(xte) == yte).float().mean())
    t0 = time.perf_counter()
    plain = fit_linear_probe(xtr, ytr, weight_decay=weight_decay, max_iter=max_iter, tolerance_grad=tol,
                             precondition=False)
    t_plain = time.perf_counter() - t0
    acc_plain = float((plain.predict(xte) == yte).float().mean())

    # sklearn on exactly the standardised features our probe uses
    ztr, zte = probe.transform(xtr).numpy(), probe.transform(xte).numpy()
    clf = LogisticRegression(C=1.0 / (weight_decay * len(ztr)), max_iter=max_iter, tol=tol)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ConvergenceWarning)
        t0 = time.perf_counter()
        clf.fit(ztr, ytr.numpy())
        t_sk = time.perf_counter() - t0
    sk_converged = not any(issubclass(w.category, ConvergenceWarning) for w in caught)
    acc_sk = float((clf.predict(zte) == yte.numpy()).mean())
    obj_ours = objective(ztr, ytr.numpy(), probe.weight.numpy(), probe.bias.numpy(), weight_decay)
    obj_sk = objective(ztr, ytr.numpy(), clf.coef_, clf.intercept_, weight_decay)
    obj_plain = objective(ztr, ytr.numpy(), plain.weight.numpy(), plain.bias.numpy(), weight_decay)

    diff = 100 * (acc_ours - acc_sk)
    print(f"\n{title}")
    print(f"{'probe':<40}{'accuracy %':>12}{'fit s':>10}{'iterations':>12}{'objective':>12}")
    print(f"{'solo_qscore.fit_linear_probe (L-BFGS)':<40}{100 * acc_ours:>12.2f}{t_ours:>10.2f}"
          f"{probe.num_iterations:>12}{obj_ours:>12.6f}")
    print(f"{'  same, precondition=False':<40}{100 * acc_plain:>12.2f}{t_plain:>10.2f}"
          f"{plain.num_iterations:>12}{obj_plain:>12.6f}")
    print(f"{'sklearn LogisticRegression(lbfgs)':<40}{100 * acc_sk:>12.2f}{t_sk:>10.2f}"
          f"{int(np.max(clf.n_iter_)):>12}{obj_sk:>12.6f}" + ("" if sk_converged else "  (ConvergenceWarning)"))
    verdict(diff, t_sk / t_ours)
    return {"ours": (acc_ours, t_ours), "plain": (acc_plain, t_plain), "sklearn": (acc_sk, t_sk)}


def verdict(diff: float, speedup: float) -> None:
    print(f"accuracy difference: {diff:+.2f} points (target |diff| <= 0.5: {'PASS' if abs(diff) <= 0.5 else 'FAIL'})")
    print(f"speed-up: {speedup:.1f}x (target >= 5x: {'PASS' if speedup >= 5 else 'FAIL'})", flush=True)

if __name__ == "__main__":
    main()
