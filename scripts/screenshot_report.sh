#!/usr/bin/env bash
# Render a `lowdim repro` report page in headless Chromium and save screenshots of it.
#
#   scripts/screenshot_report.sh REPORT_DIR [WIDTH]
#
# Needs Debian's chromium (`apt-get update && apt-get install -y chromium`; not needed by the tests).
# Writes REPORT_DIR/report-top.png (the verdict table) and REPORT_DIR/report-full.png (the whole page,
# every figure) and checks, in the DOM Chromium parsed, that every figure section holds its image.
set -euo pipefail
dir=${1:?usage: $0 REPORT_DIR [WIDTH]}
width=${2:-1280}
page="$(cd "$dir" && pwd)/report.html"
[ -f "$page" ] || { echo "no report.html in $dir (run: lowdim repro all --quick --out $dir)" >&2; exit 1; }
browser=$(command -v chromium || command -v chromium-browser || true)
[ -n "$browser" ] || { echo "chromium not found: apt-get update && apt-get install -y chromium" >&2; exit 1; }
flags=(--headless --no-sandbox --disable-gpu --hide-scrollbars --force-device-scale-factor=1)
# The page height: enough for every figure section (about 700 px each plus the table).
figures=$(grep -o '<section id=' "$page" | wc -l)
height=$((600 + 720 * figures))
"$browser" "${flags[@]}" --window-size="$width,900" --screenshot="$dir/report-top.png" "file://$page" 2>/dev/null
"$browser" "${flags[@]}" --window-size="$width,$height" --screenshot="$dir/report-full.png" "file://$page" 2>/dev/null
# Every figure section must hold its embedded image in the DOM that Chromium parsed.
dom=$("$browser" "${flags[@]}" --virtual-time-budget=5000 --run-all-compositor-stages-before-draw \
      --dump-dom "file://$page" 2>/dev/null)
images=$(grep -o 'src="data:image/png;base64,' <<<"$dom" | wc -l)
echo "sections: $figures, embedded images in the rendered DOM: $images"
[ "$images" -eq "$figures" ] || { echo "some figures have no image" >&2; exit 1; }
echo "wrote $dir/report-top.png and $dir/report-full.png"
