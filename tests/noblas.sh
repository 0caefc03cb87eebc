#!/usr/bin/env bash
# Builds the engine without BLAS (NM_WITH_BLAS=OFF, CUDA off) into a throwaway target and runs
# its C++ unit tests and the float32 fast-path, energy and thread tests against it: the own
# kernels and the scalar loops then take every product BLAS would have, and a call that only
# compiles with BLAS (it happened in session 15) fails here instead of on a user's machine.
# Usage: bash tests/noblas.sh [pytest args...]
set -euo pipefail
cd "$(dirname "$0")/.."
work="${NM_NOBLAS_DIR:-$(mktemp -d /tmp/nm-noblas.XXXXXX)}"
echo "noblas: building into $work (BLAS off, CUDA off)" >&2
pip install --no-deps --quiet --target "$work/site" \
  -Ccmake.define.NM_WITH_BLAS=OFF -Ccmake.define.NM_WITH_CUDA=OFF \
  -Ccmake.define.NM_BUILD_TESTS=ON -Cbuild-dir="$work/build" . >&2
ctest --test-dir "$work/build" --output-on-failure >&2
tests=("$@")
if [ ${#tests[@]} -eq 0 ]; then
  tests=(tests/test_fast_paths.py tests/test_energy.py tests/test_energy_deferred.py tests/test_threads.py tests/test_gradients.py)
fi
# an editable install's import hook would still send `neuromorph` to the installed build
cat > "$work/site/sitecustomize.py" <<'PY'
import sys
sys.meta_path[:] = [f for f in sys.meta_path if "editable" not in type(f).__module__]
PY
cd "$work"  # import the BLAS-less build, not the source tree's package
export PYTHONPATH="$work/site" PYTHONDONTWRITEBYTECODE=1
python -c "import sys, neuromorph as nm; f = nm._core.__file__; print('noblas: engine', f, file=sys.stderr); assert f.startswith('$work'), f; assert not nm._core.have_blas(), 'built with BLAS'"
python -m pytest -q -p no:cacheprovider --rootdir "$OLDPWD" -k "not bench" "${tests[@]/#/$OLDPWD/}"
