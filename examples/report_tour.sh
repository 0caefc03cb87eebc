#!/bin/sh
# The README's "See inside a model" tour: train each seed model briefly on the data the package
# makes, write its report, and (with Chromium installed) its screenshot OUT_DIR/report-<model>.png
# (the ones in docs/ were made so).
#   sh examples/report_tour.sh [OUT_DIR]          # under a minute on 2 cores
set -e
out=${1:-tour}
mkdir -p "$out"
mdlc run columnformer-classifier --optimizer adam --epochs 6 --batches 400 \
     --validation-split 0.2 --metrics accuracy --verbosity 0 --save "$out/columnformer-classifier.nm"
mdlc run hamux-completion --optimizer adam --epochs 6 --batches 400 --validation-split 0.2 \
     --verbosity 0 --save "$out/hamux-completion.nm"
mdlc run heptapod-lm --epochs 2 --batches 100 --verbosity 0 --save "$out/heptapod-lm.nm"
mdlc run genesis-lm --epochs 2 --batches 100 --verbosity 0 --save "$out/genesis-lm.nm"
for m in columnformer-classifier hamux-completion heptapod-lm genesis-lm; do
    mdlc report "$out/$m.nm" -o "$out/$m.html"
    if command -v chromium >/dev/null 2>&1; then
        chromium --headless --no-sandbox --disable-gpu --hide-scrollbars --window-size=1200,2400 \
                 --screenshot="$out/report-$m.png" "file://$(realpath "$out/$m.html")" 2>/dev/null
    fi
done
