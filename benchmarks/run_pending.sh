#!/usr/bin/env bash
# The long science runs of benchmarks/RESULTS.md (the issue-scale runs), one at a time (each takes the
# whole 2-core machine: run nothing else beside them). Every command reuses what has finished and resumes what was
# interrupted (bench_qscore_predicts from its last epoch, bench_regularization per arm,
# bench_ifm_trifeature --resume per run), so running this script again in a later session continues
# where the last one stopped. About 7.5 hours on 2 cores in all.
#
#   nohup bash benchmarks/run_pending.sh > logs/pending.log 2>&1 &
set -euo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python
mkdir -p logs

pretrain() {  # method seed: 45 epochs of solo-learn main's cifar config, Q against length every 15
    local png=benchmarks/qscore_predicts_main45 run=runs/bench_qscore45_$1
    [ "$2" = 0 ] || { png="${png}_seed$2"; run="${run}_seed$2"; }
    if [ -f "$run/bench_qscore_predicts.json" ] && [ -f "$run/bench_scale.json" ]; then
        echo "$1 seed $2: finished ($run)"; return
    fi
    $PY benchmarks/bench_qscore_predicts.py --epochs 45 --trend-every 15 --methods "$1" --seed "$2" --threads 2 \
        --num-workers 1 --run-prefix runs/bench_qscore45_ --png-prefix "$png" | tee "logs/$1_45_seed$2.log"
}
regularise() {  # method: plain vs Q-Score (the paper's lambda and 1e-3) vs lasso, 3 further-training seeds
    $PY benchmarks/bench_regularization.py --checkpoint-prefix runs/bench_qscore45_ --methods "$1" --seeds 0 1 2 \
        --steps 23 --lambdas 1e-4 1e-3 --lasso 1e-4 --threads 2 --run-prefix runs/bench_reg45_ \
        | tee "logs/reg45_$1.log"
}

pretrain simclr 0
regularise simclr
pretrain byol 0
regularise byol
pretrain simclr 1
pretrain simclr 2
$PY benchmarks/bench_ifm_trifeature.py --scale 2 --taus 0.2 0.5 --paper-aug --no-init --threads 2 --resume \
    --json runs/ifm_trifeature_scale2_tau.json --png benchmarks/ifm_trifeature_scale2_tau.png | tee logs/ifm_tau.log
