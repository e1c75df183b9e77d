"""A stand-in snakegrinder for the Ray tests until the real stand-in (issue #3) lands.

It accepts snakegrinder's options, writes ``model.mlir`` and ``manifest.json`` into
``--out`` like ``--trace-with-values`` does, and echoes what it received so tests can check
that arguments and environment arrive verbatim. Behaviour knobs come from the job's
environment (the user's ``--env``): ``WF_FAKE_EXIT`` (exit code), ``WF_FAKE_SLEEP``
(seconds to run before finishing). A missing ``--source`` fails like the real program.
"""

import hashlib
import json
import os
import sys
import time

KNOWN = {"--source", "--class", "--inputs", "--seed", "--out"}
FLAGS = {"--trace-with-values", "--trace", "--trace-example"}


def main(argv: list[str]) -> int:
    opts: dict[str, str] = {}
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg in FLAGS:
            opts[arg] = "1"
            i += 1
        elif arg in KNOWN and i + 1 < len(argv):
            opts[arg] = argv[i + 1]
            i += 2
        else:
            print(f"unknown option: {arg}", file=sys.stderr)
            return 2
    print("ARGV " + json.dumps(argv), flush=True)
    source = opts.get("--source")
    if source is not None:
        if not os.path.isfile(source):
            print(f"FAILED: model source not found: {source} (cwd {os.getcwd()})", flush=True)
            return 1
        with open(source, "rb") as fh:
            print("SOURCE " + json.dumps(hashlib.sha256(fh.read()).hexdigest()), flush=True)
    print("CUDA_VISIBLE_DEVICES " + json.dumps(os.environ.get("CUDA_VISIBLE_DEVICES")), flush=True)
    print("WARPFORGE_JOB_ID " + json.dumps(os.environ.get("WARPFORGE_JOB_ID")), flush=True)
    print("WARPFORGE_CORRELATION_ID " + json.dumps(os.environ.get("WARPFORGE_CORRELATION_ID")))
    user_env = {k: v for k, v in os.environ.items() if k.startswith("WF_USER_")}
    print("USER_ENV " + json.dumps(user_env, sort_keys=True), flush=True)
    time.sleep(float(os.environ.get("WF_FAKE_SLEEP", "0")))
    code = int(os.environ.get("WF_FAKE_EXIT", "0"))
    out = opts.get("--out")
    if out:
        os.makedirs(out, exist_ok=True)
        with open(os.path.join(out, "model.mlir"), "w") as fh:
            fh.write(
                "module @main {\n"
                "  func.func public @forward(%arg0: tensor<1x8xf32>) -> tensor<1x4xf32> {\n"
                "    %0 = stablehlo.constant dense<0.0> : tensor<1x4xf32>\n"
                "    stablehlo.return %0 : tensor<1x4xf32>\n"
                "  }\n"
                "}\n"
            )
        manifest = {
            "kind": "snakegrinder-fx-trace-bundle",
            "version": 1,
            "status": "ok" if code == 0 else "failed",
            "tracer": "fake",
            "artifacts": {
                "mlir": "model.mlir",
                "fx_graph": None,
                "inputs": [],
                "weights": [],
                "outputs": [],
            },
            "seed": int(opts.get("--seed", "42")),
            "timestamp": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
        with open(os.path.join(out, "manifest.json"), "w") as fh:
            json.dump(manifest, fh)
    if code:
        print(f"FAILED: fake failure with exit code {code}", flush=True)
        return code
    print(f"SUCCESS: wrote {out}/model.mlir", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
