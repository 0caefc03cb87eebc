#!/usr/bin/env bash
# Builds the engine with AddressSanitizer and UndefinedBehaviorSanitizer into a throwaway
# target (never the installed package) and runs the engine-heavy tests against it:
# model files, hostile IR, every node kind's gradients, training and misuse. Any ASan/UBSan
# report fails the run (halt_on_error). Usage: bash tests/sanitize.sh [pytest args...]
set -euo pipefail
cd "$(dirname "$0")/.."
work="${NM_SANITIZE_DIR:-$(mktemp -d /tmp/nm-sanitize.XXXXXX)}"
echo "sanitize: building into $work (CUDA off)" >&2
asan="$(${CXX:-c++} -print-file-name=libasan.so)"
ubsan="$(${CXX:-c++} -print-file-name=libubsan.so)"
if [ ! -f "$asan" ] || [ ! -f "$ubsan" ]; then
  echo "sanitize: skipped: the C++ compiler has no libasan/libubsan" >&2
  exit 0
fi
pip install --no-deps --quiet --target "$work/site" \
  -Ccmake.define.NM_SANITIZE=address,undefined -Ccmake.define.NM_WITH_CUDA=OFF \
  -Ccmake.define.NM_BUILD_TESTS=ON \
  -Cbuild-dir="$work/build" . >&2
# the engine's C++ unit tests (csrc/tests: op tables, IR validator, plan), sanitized too
# (the engine finds OpenBLAS through its install RPATH; the build tree's test programs need the path)
blas_dir="$(python -c 'import scipy_openblas32 as s; print(s.get_lib_dir())' 2>/dev/null || true)"
ASAN_OPTIONS="detect_leaks=0:halt_on_error=1" UBSAN_OPTIONS="halt_on_error=1:print_stacktrace=1" \
  LD_LIBRARY_PATH="$blas_dir${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}" \
  ctest --test-dir "$work/build" --output-on-failure >&2
tests=("$@")
if [ ${#tests[@]} -eq 0 ]; then
  tests=(tests/test_model_files.py tests/test_hostile_ir.py tests/test_cells.py tests/test_fit.py
         tests/test_misuse.py tests/test_energy.py tests/test_energy_deferred.py
         tests/test_struct_nodes.py tests/test_neuron.py
         tests/test_save_load.py tests/test_gradients.py tests/test_threads.py)
fi
# an editable install's import hook would still send `neuromorph` to the unsanitized build
cat > "$work/site/sitecustomize.py" <<'PY'
import sys
sys.meta_path[:] = [f for f in sys.meta_path if "editable" not in type(f).__module__]
PY
cd "$work"  # import the sanitized build, not the source tree's package
export LD_PRELOAD="$asan $ubsan" PYTHONPATH="$work/site" PYTHONDONTWRITEBYTECODE=1
export ASAN_OPTIONS="detect_leaks=0:halt_on_error=1:abort_on_error=1"
export UBSAN_OPTIONS="halt_on_error=1:print_stacktrace=1"
python -c "import sys, neuromorph as nm; f = nm._core.__file__; print('sanitize: engine', f, file=sys.stderr); assert f.startswith('$work'), f"
# RSS-based checks (leaks, load peak) mean nothing under ASan (quarantine, shadow memory)

python -m pytest -q -p no:cacheprovider --rootdir "$OLDPWD" -k "not do_not_leak and not peak_memory" \
  "${tests[@]/#/$OLDPWD/}"
