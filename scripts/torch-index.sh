#!/bin/sh
# The pip options that install torch's CPU build on purpose: PyPI's Linux wheel of torch is the CUDA
# build (about 2.5 GB of nvidia-* packages more), the CPU wheels ("2.13.0+cpu") live on PyTorch's own
# index. Prints `--extra-index-url ...` (the index, after the extra indexes pip is already configured
# with, which a command-line option would otherwise replace) when the index answers within 5 s;
# otherwise nothing, and says on stderr that pip takes torch from its configured index (an offline
# mirror, say). Usage: torch-index.sh URL [PYTHON]; an empty URL prints nothing.
url="${1:-}"
python="${2:-python3}"
[ -n "$url" ] || exit 0
if "$python" - "$url" 2>/dev/null <<'PY'
import sys
import urllib.request

urllib.request.urlopen(sys.argv[1].rstrip("/") + "/torch/", timeout=5).close()
PY
then
    configured=$("$python" -m pip config get global.extra-index-url 2>/dev/null || true)
    for index in $configured ${PIP_EXTRA_INDEX_URL:-}; do
        printf -- '--extra-index-url %s ' "$index"
    done
    printf -- '--extra-index-url %s\n' "$url"
else
    echo "torch: the CPU wheel index $url does not answer; pip takes torch from its configured index" \
         "(on PyPI that is the CUDA build; TORCH_INDEX= names another index, TORCH_INDEX= empty skips this)" >&2
fi
