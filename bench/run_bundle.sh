#!/bin/sh
# The GPU benchmark from the bundle that bench/bundle.py writes (`make gpu-bundle`), on a machine
# with Python and PyTorch and no network:
#   sh gpu-bundle/run.sh RESULTS_DIR [bench/gpu.py's arguments, e.g. --device cpu --quick]
# Installs the bundle's wheels into a scratch folder ($SCRATCH, else a new temporary one) with the
# pip wheel it carries, then runs bench/gpu.py from the bundle's sources; the result files and the
# run's log (gpu-run.log) go to RESULTS_DIR. $PYTHON picks the interpreter (default python3).
set -eu
bundle=$(cd "$(dirname "$0")" && pwd)
mkdir -p "$1"
results=$(cd "$1" && pwd)
shift
python=${PYTHON:-python3}
scratch=${SCRATCH:-$(mktemp -d)}
start=$(date +%s)
built_for=$(cat "$bundle/python-version")
here=$("$python" -c 'import sys; print("%d.%d" % sys.version_info[:2])')
if [ "$here" != "$built_for" ]; then
    echo "this bundle is for Python $built_for, $python is $here: make gpu-bundle GPU_PYTHON=$here" >&2
    exit 2
fi
"$python" -c "import torch; print('torch', torch.__version__, 'CUDA', torch.cuda.is_available())"
wheels=""
for wheel in "$bundle"/wheels/*.whl; do
    name=$(basename "$wheel")
    case "$name" in
        pip-*) pip_wheel=$wheel ;;
        # The machine's own, when it has them: they were built with its torch.
        torchaudio-* | numpy-*)
            module=${name%%-*}
            if "$python" -c "import $module" 2>/dev/null; then echo "using the machine's $module"
            else wheels="$wheels $wheel"; fi ;;
        *) wheels="$wheels $wheel" ;;
    esac
done
# shellcheck disable=SC2086  # one argument per wheel
"$python" "$pip_wheel/pip" install --no-index --no-deps --no-compile --quiet --disable-pip-version-check \
    --target "$scratch/site" $wheels
# Ours runs as pure Python: its compiled ops are built for one torch release, and the engine uses
# only its transforms (torchaudio imports without them when they are absent).
rm -f "$scratch"/site/torchaudio/lib/*.so
echo "installed into $scratch/site in $(( $(date +%s) - start )) s"
status=0
{
    PYTHONPATH="$scratch/site:$bundle/src" "$python" "$bundle/src/bench/gpu.py" --out "$results" \
        --models-dir "$scratch/models" "$@" 2>&1 || echo $? > "$scratch/status"
} | tee "$results/gpu-run.log"
[ -f "$scratch/status" ] && status=$(cat "$scratch/status")
echo "finished with status $status in $(( $(date +%s) - start )) s; results in $results"
exit "$status"
