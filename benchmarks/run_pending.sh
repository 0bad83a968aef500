#!/usr/bin/env bash
# The long science runs of benchmarks/RESULTS.md (the issue-scale runs), one at a time (each takes the
# whole 2-core machine: run nothing else beside them). Every command reuses what has finished and resumes what was
# interrupted (bench_qscore_predicts from its last epoch, bench_regularization per arm,
# bench_ifm_trifeature --resume per run), so running this script again in a later session continues
# where the last one stopped. About 7.5 hours on 2 cores in all, then solo-learn's linear evaluation of the four
# 45-epoch encoders (100 epochs on 3,000 images, ~48 s per 1,000 images per epoch on a loaded 2-core machine: ~4 h
# each; an interrupted one starts again from its first epoch), then (issue 24 items 2 and 3) the paper's
# further-training regime on the two seed-0 encoders (18 arms of 50 epochs = 1,150 steps, ~1.5 h each: ~28 h;
# an interrupted arm resumes from its last epoch) and BYOL 45 epochs with solo-learn's own schedule (3 seeds,
# ~1.5 h each: ~4.5 h). About 60 hours (2.5 days) in all, the IFM readout runs (~3 h) included.
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
solo_linear() {  # method seed: solo-learn's own linear evaluation (SGD, 100 epochs) of a finished 45-epoch run
    # (issue 24 item 4): the same arguments as pretrain, so the same size stamp; --reuse-only: nothing re-trains
    local png=benchmarks/qscore_predicts_main45 run=runs/bench_qscore45_$1
    [ "$2" = 0 ] || { png="${png}_seed$2"; run="${run}_seed$2"; }
    if grep -q '"solo_linear"' "$run/bench_qscore_predicts.json" 2>/dev/null; then
        echo "$1 seed $2: solo linear evaluation finished ($run)"; return
    fi
    $PY benchmarks/bench_qscore_predicts.py --epochs 45 --trend-every 15 --methods "$1" --seed "$2" --threads 2 \
        --num-workers 1 --run-prefix runs/bench_qscore45_ --png-prefix "$png" --solo-linear-epochs 100 --reuse-only \
        | tee "logs/$1_45_seed$2_solo_linear.log"
}
regularise_paper() {  # method: the paper's regime (issue 24 item 2): 50 epochs of solo-qscore finetune's schedule
    # (LARS, lr 1e-5, warm-up then cosine), plain vs Q-Score (the paper's lambda) vs lasso, 3 seeds, same steps per arm
    $PY benchmarks/bench_regularization.py --regime paper --epochs 50 --checkpoint-prefix runs/bench_qscore45_ \
        --methods "$1" --seeds 0 1 2 --lambdas 1e-4 --lasso 1e-4 --threads 2 --run-prefix runs/bench_regpaper45_ \
        | tee "logs/regpaper45_$1.log"
}
pretrain_solo() {  # method seed: as pretrain, with solo-learn's own schedule (its 10-epoch warm-up; issue 24 item 3)
    local png=benchmarks/qscore_predicts_solo45 run=runs/bench_qscore45solo_$1
    [ "$2" = 0 ] || { png="${png}_seed$2"; run="${run}_seed$2"; }
    if [ -f "$run/bench_qscore_predicts.json" ] && [ -f "$run/bench_scale.json" ]; then
        echo "$1 seed $2, solo schedule: finished ($run)"; return
    fi
    $PY benchmarks/bench_qscore_predicts.py --solo-schedule --epochs 45 --trend-every 15 --methods "$1" --seed "$2" \
        --threads 2 --num-workers 1 --run-prefix runs/bench_qscore45solo_ --png-prefix "$png" \
        | tee "logs/$1_45solo_seed$2.log"
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
# IFM paper's readout (issue 24 item 5: features of seeded augmented views, --readout-aug) at its batch 512, then
# at batch 128 (the line above's protocol but for the readout, to separate the two changes); ~1 h + ~2 h.
# ResNet-18 (--net resnet18) does not fit: 7-8x the small net's step time, 10-16 h per 18 runs at any batch.
$PY benchmarks/bench_ifm_trifeature.py --scale 2 --taus 0.05 0.2 0.5 --seeds 0 1 2 --paper-aug --readout-aug \
    --batch-size 512 --threads 2 --resume --json runs/ifm_trifeature_scale2_readout_b512.json \
    --png benchmarks/ifm_trifeature_scale2_readout_b512.png | tee logs/ifm_readout_b512.log
$PY benchmarks/bench_ifm_trifeature.py --scale 2 --taus 0.05 0.2 0.5 --seeds 0 1 2 --paper-aug --readout-aug \
    --threads 2 --resume --json runs/ifm_trifeature_scale2_readout.json \
    --png benchmarks/ifm_trifeature_scale2_readout.png | tee logs/ifm_readout.log
solo_linear simclr 0
solo_linear byol 0
solo_linear simclr 1
solo_linear simclr 2
# issue 24 items 2 and 3 (after the pretrain lines above that they depend on)
regularise_paper simclr
regularise_paper byol
pretrain_solo byol 0
pretrain_solo byol 1
pretrain_solo byol 2
