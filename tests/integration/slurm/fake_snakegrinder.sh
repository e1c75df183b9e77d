#!/bin/sh
# Stand-in payload for the Slurm integration tests: records its argv and environment
# verbatim (NUL-separated, into $WARPFORGE_OUT_DIR/argv.nul and env.nul) before anything
# else, accepts snakegrinder's options, writes model.mlir + manifest.json into --out, and
# behaves as the job environment asks: WF_FAKE_SLEEP=<s> sleeps first, WF_FAKE_EXIT=<n>
# exits with n (after printing FAILED), WF_FAKE_STDERR=<text> goes to stderr.
if [ -n "${WARPFORGE_OUT_DIR:-}" ] && [ -d "$WARPFORGE_OUT_DIR" ]; then
  printf '%s\0' "$@" >"$WARPFORGE_OUT_DIR/argv.nul"
  env -0 >"$WARPFORGE_OUT_DIR/env.nul"
fi
out=""
while [ $# -gt 0 ]; do
  case "$1" in
    --out) out=$2; shift 2 ;;
    --out=*) out=${1#--out=}; shift ;;
    --source|--class|--inputs|--seed) shift 2 ;;
    --trace-with-values|--trace|--trace-example) shift ;;
    *) echo "fake-snakegrinder: unknown option $1" >&2; exit 2 ;;
  esac
done
echo "fake-snakegrinder on $(hostname) CUDA_VISIBLE_DEVICES=${CUDA_VISIBLE_DEVICES:-unset}"
[ -n "${WF_FAKE_STDERR:-}" ] && echo "$WF_FAKE_STDERR" >&2
[ -n "${WF_FAKE_SLEEP:-}" ] && sleep "$WF_FAKE_SLEEP"
if [ -n "${WF_FAKE_EXIT:-}" ] && [ "$WF_FAKE_EXIT" != 0 ]; then
  echo "FAILED: asked to exit $WF_FAKE_EXIT"; exit "$WF_FAKE_EXIT"
fi
[ -n "$out" ] || { echo "fake-snakegrinder: --out missing" >&2; exit 2; }
mkdir -p "$out"
printf 'module @main {\n  func.func public @forward(%%arg0: tensor<1x8xf32>) -> tensor<1x4xf32> {\n    %%0 = stablehlo.constant dense<0.0> : tensor<1x4xf32>\n    stablehlo.return %%0 : tensor<1x4xf32>\n  }\n}\n' >"$out/model.mlir"
printf '{"kind": "snakegrinder-fx-trace-bundle", "version": 1, "status": "ok", "artifacts": {"mlir": "model.mlir"}}\n' >"$out/manifest.json"
echo "SUCCESS: wrote $out/model.mlir"
