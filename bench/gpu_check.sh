#!/usr/bin/env bash
# GPUs on one machine, checked for real: run on a machine with NVIDIA GPUs, from anywhere.
#
#   bench/gpu_check.sh                         # Modelyard installed (pip install -e .), online
#   WHEELS=DIR bench/gpu_check.sh              # offline: Modelyard and the Cog SDK from wheels
#   bench/gpu_check.sh prepare DIR [3.12]      # where pip works: put those wheels in DIR
#   bench/gpu_check.sh --gpus 0:t4,1:t4        # a dry run anywhere (declared GPUs, no CUDA)
#
# It serves `modelyard serve --gpus <ids from nvidia-smi>` with a model on a GPU SKU, runs two
# predictions at once (one on a one-GPU machine) that each report, through the CUDA driver
# (ctypes on libcuda.so.1: the model needs no package but the Cog SDK), the GPU they saw, and
# one more that must wait for a GPU, and prints each check and a verdict (bench/gpu_check.py).
# Exit status: 0 passed, 1 failed, 2 could not run here.
#
# Offline (a machine that cannot reach a package index) two things need wheels: Modelyard
# itself, unless `python3 -c 'import modelyard.engine.gpus'` works there, and the model's
# environment, which Modelyard builds with uv from `cog==<its Cog SDK>` and its dependencies.
# `prepare` downloads both, for the target's Python version (3.12 on the lent H100/H200
# machines), as manylinux x86-64 wheels: about 66 MB, mostly uv, botocore, pillow, coglet.
# HAVE="pillow uvloop ..." leaves out wheels of packages the target's python3 already has
# (never those the model's environment needs: uv builds it from the wheel folder alone); on
# the lent machines, whose working tree may carry 64 MiB in all, that is needed:
#   HAVE="pillow uvloop pygments rich httpx httpcore h11 anyio jinja2 markupsafe typer click
#         markdown-it-py mdurl shellingham python-dateutil six" bench/gpu_check.sh prepare .whl 3.12
# With WHEELS set, this script installs Modelyard from them into a virtual environment under
# the work folder that also sees the target python3's own packages, and makes the model's build
# use the wheel folder alone (UV_OFFLINE=1, UV_FIND_LINKS=DIR).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PY=${PYTHON:-python3}

_normal() { # a distribution name as PEP 503 compares them
    echo "$1" | tr 'A-Z_.' 'a-z--'
}

_wheel_name() { # the distribution a wheel file holds
    _normal "$(basename "$1" | cut -d- -f1)"
}

prepare() {
    local dest=${1:?usage: bench/gpu_check.sh prepare DIR [PYTHON_VERSION]}
    local version=${2:-$("$PY" -c 'import sys; print("%d.%d" % sys.version_info[:2])')}
    mkdir -p "$dest"
    dest=$(cd "$dest" && pwd)
    local sdk
    sdk=$(cd "$ROOT" && "$PY" -c \
        'from modelyard.runtime.envspec import DEFAULT_COG_SDK; print(DEFAULT_COG_SDK)' \
        2>/dev/null || echo "cog==0.23.1")
    echo "Building the Modelyard wheel into $dest"
    "$PY" -m pip wheel --quiet --no-deps --wheel-dir "$dest" "$ROOT"
    local wheel
    wheel=$(ls -t "$dest"/modelyard-*.whl | head -n 1)
    echo "Downloading its dependencies and $sdk for Python $version (manylinux x86-64)"
    local platforms=()
    for tag in manylinux1 manylinux2010 manylinux2014 manylinux_2_17 manylinux_2_24 \
        manylinux_2_27 manylinux_2_28 manylinux_2_31 manylinux_2_34; do
        platforms+=(--platform "${tag}_x86_64")
    done
    # One resolution for both, so each package is there in one version only.
    "$PY" -m pip download --quiet --only-binary=:all: --implementation cp \
        --python-version "$version" "${platforms[@]}" --dest "$dest" "$wheel" "$sdk"
    if [[ -n ${HAVE:-} ]]; then
        # What the model's environment needs, resolved from the folder alone (same versions).
        local model_env=$dest/.model-env
        rm -rf "$model_env"
        "$PY" -m pip download --quiet --no-index --find-links "$dest" --only-binary=:all: \
            --implementation cp --python-version "$version" "${platforms[@]}" \
            --dest "$model_env" "$sdk"
        local name file
        for name in $HAVE; do
            for file in "$dest"/*.whl; do
                [[ $(_wheel_name "$file") == $(_normal "$name") ]] || continue
                if ls "$model_env" | grep -q "^$(basename "$file")\$"; then
                    echo "  keeping $(basename "$file"): the model's environment needs it"
                else
                    rm "$file"
                fi
            done
        done
        rm -rf "$model_env"
    fi
    echo "Done: $(ls "$dest" | wc -l) wheels, $(du -sh "$dest" | cut -f1) in $dest"
    echo "On the GPU machine: WHEELS=$dest bench/gpu_check.sh"
}

if [[ ${1:-} == prepare ]]; then
    shift
    prepare "$@"
    exit 0
fi

declared=false
for arg in "$@"; do
    if [[ $arg == --gpus* ]]; then declared=true; fi
done

# 1. This machine's GPUs (what `modelyard serve` will ask too).
if ! $declared; then
    if ! command -v nvidia-smi >/dev/null; then
        echo "verdict: SKIPPED: no nvidia-smi on this machine (no NVIDIA driver)"
        exit 2
    fi
    if ! listing=$(nvidia-smi --query-gpu=index,name,uuid --format=csv,noheader 2>&1); then
        echo "$listing"
        echo "verdict: SKIPPED: nvidia-smi failed (no usable GPU)"
        exit 2
    fi
    echo "nvidia-smi reports:"
    echo "$listing" | sed 's/^/  /'
fi

# 2. Modelyard: the one installed, else one installed from $WHEELS.
WORK=${WORK:-$(mktemp -d "${TMPDIR:-/tmp}/gpu-check.XXXXXX")}
mkdir -p "$WORK"
if [[ -n ${WHEELS:-} ]]; then
    WHEELS=$(cd "$WHEELS" && pwd)
    # The model's environment: uv gets its packages from the wheel folder, never a network.
    export UV_OFFLINE=1 UV_FIND_LINKS=$WHEELS
fi
if (cd "$ROOT" && "$PY" -c 'import modelyard.engine.gpus, httpx' 2>/dev/null) &&
    command -v modelyard >/dev/null; then
    MY_PY=$PY
    # the `modelyard` command of that python first (the server, the token and the push use it)
    export PATH="$(dirname "$(command -v "$PY")"):$PATH"
elif [[ -n ${WHEELS:-} ]]; then
    echo "Installing Modelyard from $WHEELS into $WORK/venv (offline)"
    "$PY" -m venv "$WORK/venv"
    # The venv also sees $PY's packages (after its own), so wheels left out with HAVE are
    # found there; `--system-site-packages` would not do when $PY is itself a venv's python.
    venv_site=$("$WORK/venv/bin/python" -c 'import sysconfig; print(sysconfig.get_path("purelib"))')
    "$PY" -c 'import site; print("\n".join(site.getsitepackages()))' >"$venv_site/gpu-check-reuse.pth"
    "$WORK/venv/bin/python" -m pip install --quiet --no-index --find-links "$WHEELS" modelyard
    MY_PY=$WORK/venv/bin/python
    export PATH="$WORK/venv/bin:$PATH" # `modelyard` for the server, the token and the push
else
    cat <<EOF
Modelyard is not installed for $PY (or is older than engine/gpus.py) and WHEELS is not set.
Install it (pip install -e $ROOT) where a package index is reachable; on a machine without
one, run 'bench/gpu_check.sh prepare DIR PYTHON_VERSION' where pip works, bring DIR here and
run 'WHEELS=DIR bench/gpu_check.sh'.
verdict: SKIPPED: Modelyard is not installed
EOF
    exit 2
fi

# 3. The check itself (from the repository root: it imports bench.modelyard_serve).
cd "$ROOT"
export PYTHONUNBUFFERED=1
exec "$MY_PY" -m bench.gpu_check --workdir "$WORK" "$@"
