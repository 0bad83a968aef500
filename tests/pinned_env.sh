#!/usr/bin/env bash
# The adapter and callbacks under solo-learn main's own pins (lightning==2.1.2, torchmetrics<0.12), as a
# user who installs solo-learn with its requirements has them. A scratch virtualenv reuses the project's
# torch, solo-learn and solo-qscore (site.addsitedir in a .pth file) and installs only the pinned packages,
# which shadow the newer ones. Usage: tests/pinned_env.sh PATH/TO/.venv/bin/python
set -euo pipefail
BASE_PY=${1:-.venv/bin/python}
PINS=${PINS_VENV:-.venv-pins}
SITE=$("$BASE_PY" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
if [ ! -f "$PINS/.ready" ]; then
  rm -rf "$PINS"
  "$BASE_PY" -m venv --without-pip "$PINS"
  PINS_SITE=$("$PINS/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
  echo "import site; site.addsitedir('$SITE')" > "$PINS_SITE/zz_reuse_project_env.pth"
  "$BASE_PY" -m pip --python "$PINS/bin/python" install -q "lightning==2.1.2" "torchmetrics==0.11.4" "setuptools<81"
  touch "$PINS/.ready"
fi
"$PINS/bin/python" - <<'PY'
import lightning, torchmetrics
assert lightning.__version__ == "2.1.2", lightning.__version__
assert torchmetrics.__version__.startswith("0.11"), torchmetrics.__version__
print(f"pinned environment: lightning {lightning.__version__}, torchmetrics {torchmetrics.__version__}")
PY
# (the method tests moved from test_solo_main.py to test_solo_method.py / test_solo_ifm.py: 6 tests, not 2)
"$PINS/bin/python" -m pytest -q -p no:cacheprovider tests/adapters/test_solo_method.py tests/adapters/test_solo_ifm.py \
  tests/adapters/test_lightning.py \
  -k "takes_steps_with_qscore and (simclr or byol) or namespaces or survives_checkpoint or epsilon_zero_equals and simclr"
