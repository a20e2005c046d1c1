#!/usr/bin/env bash
# Create (once) a separate virtualenv with PyTorch, the reference side of the equality tests
# (tests/torch_side.py): usage `ci/torch-venv.sh DIR`, then `export CMIR_TEST_TORCH_PYTHON=DIR/bin/python`.
# PyTorch is never a dependency of cmir_tf itself. Idempotent: a venv that already imports the pinned
# torch is left as it is (fast).
set -euo pipefail
dir="${1:?usage: ci/torch-venv.sh DIR}"
torch_version="2.13.0"
python="${PYTHON:-python3}"
if [ -x "$dir/bin/python" ] && "$dir/bin/python" -c "import numpy, torch, sys; sys.exit(torch.__version__.split('+')[0] != '$torch_version')" 2>/dev/null; then
    echo "torch venv $dir: torch $torch_version present"
    exit 0
fi
"$python" -m venv "$dir"
"$dir/bin/python" -m pip install --quiet --upgrade pip
# TORCH_INDEX_URL (optional), e.g. https://download.pytorch.org/whl/cpu for the CPU-only wheel
"$dir/bin/python" -m pip install --quiet "torch==$torch_version" numpy ${TORCH_INDEX_URL:+--index-url "$TORCH_INDEX_URL" --extra-index-url https://pypi.org/simple}
"$dir/bin/python" -c "import torch; print('torch venv', '$dir:', torch.__version__)"
