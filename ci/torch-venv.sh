#!/usr/bin/env bash
# Create (once) a virtualenv with PyTorch for the tests that compare cmir_tf with the published PyTorch
# code (tests/torch_side.py). PyTorch is never a dependency of cmir_tf itself.
#   ci/torch-venv.sh DIR      then: export CMIR_TEST_TORCH_PYTHON=DIR/bin/python
# Idempotent: returns at once when DIR/bin/python already imports torch 2.13.0.
set -euo pipefail
dir="${1:?usage: ci/torch-venv.sh DIR}"
want="2.13.0"
if [ -x "$dir/bin/python" ] && "$dir/bin/python" -c "import numpy, torch, sys; sys.exit(not torch.__version__.startswith('$want'))" 2>/dev/null; then
    exit 0
fi
python3 -m venv "$dir"
# pip's own configuration decides the index (PIP_INDEX_URL / PIP_EXTRA_INDEX_URL, e.g. PyTorch's CPU wheels)
"$dir/bin/pip" install --quiet "torch==$want" numpy
"$dir/bin/python" -c "import torch, numpy; print('torch', torch.__version__, 'numpy', numpy.__version__)"
