#!/usr/bin/env bash
# tools/gpu_check.sh: the whole check on a CUDA machine in one prepared run (docs/gpu.md).
#
#   install -> env -> data make -> pre-train (every model, fp32; albef and copa in bf16 too) -> zero-shot retrieval
#   and patch detection -> fine-tune + test every task (albef, copa; fp32 and bf16) -> profile at base scale in fp32
#   and bf16 (224 px; 384 px when time is left) -> $OUT/gpu_<name>.{json,md}
#
# Every stage runs under `timeout`, logs to $OUT/logs/<stage>.log and records its exit status and seconds in
# $OUT/log.txt; a failing stage stops nothing else. The functional stages stop starting new work when only
# PROFILE_RESERVE_S of the BUDGET_S remain, so the efficiency profile always gets its time.
#
# Run from the repository root:
#   bash tools/gpu_check.sh prepare     # on the CPU machine: make the carried folders .whl and .gpu_pylib
#   bash tools/gpu_check.sh             # on the GPU machine (Python 3.12, torch there, no network), carrying both
#   DEVICE=cpu QUICK=1 PYTHON=/work/venv/bin/python BUDGET_S=1800 bash tools/gpu_check.sh   # a CPU dry run
#
# Settings (environment; docs/gpu.md lists the defaults): DEVICE (cuda), QUICK (0; 1 = two models, small batches,
# tiny-scale profile), ONLY (stage groups: install,env,data,pretrain,tasks,profile), PYTHON (python3), OUT
# (./.gpu_out), WORK (scratch: $TMPDIR/copa_gpu_check), WHEELS (.whl), PYLIB (.gpu_pylib), SITE (install target),
# INSTALL (auto: install the wheels when mmengine, fvcore or pycocotools does not import; 1; 0), BUDGET_S (480),
# PROFILE_RESERVE_S (300), PROFILE_EXTRA_MIN_S (150), JOBS, JOB_THREADS, NAME (slug of the device name), SCALE,
# PROFILE_MODELS, PROFILE_SIZES, PROFILE_EXTRA_SIZES, PROFILE_BATCH, PROFILE_TRAIN_BATCH, PROFILE_REPEATS,
# PROFILE_TASKS, PROFILE_PRECISIONS, PRETRAIN_MODELS, PRETRAIN_BF16_MODELS, PRETRAIN_ITERS, TASK_MODELS, TASKS,
# TASK_PRECISIONS, FT_ITERS, EVAL_LIMIT, DATA_WORKERS.

# No `set -e`/pipefail: a failing stage is recorded and the run goes on.
set -u

T0=$(date +%s)
ROOT=$PWD
DEVICE=${DEVICE:-cuda}
QUICK=${QUICK:-0}
PY=${PYTHON:-python3}
OUT=${OUT:-$ROOT/.gpu_out}
WORK=${WORK:-${TMPDIR:-/tmp}/copa_gpu_check}
WHEELS=${WHEELS:-$ROOT/.whl}
PYLIB=${PYLIB:-$ROOT/.gpu_pylib}
SITE=${SITE:-${TMPDIR:-/tmp}/copa_gpu_site}
INSTALL=${INSTALL:-auto}
BUDGET_S=${BUDGET_S:-480}
PROFILE_RESERVE_S=${PROFILE_RESERVE_S:-300}
PROFILE_EXTRA_MIN_S=${PROFILE_EXTRA_MIN_S:-150}   # start the extra image size only with this much left
NPROC=$(nproc 2>/dev/null || echo 2)
ALL_MODELS="albef copa trips evit random tome vilt"

if [ "$QUICK" = 1 ]; then
    SCALE=${SCALE:-tiny}
    PROFILE_MODELS=${PROFILE_MODELS:-albef,copa}
    PROFILE_SIZES=${PROFILE_SIZES-}                # the scale's own size
    PROFILE_EXTRA_SIZES=${PROFILE_EXTRA_SIZES-}
    PROFILE_BATCH=${PROFILE_BATCH:-8}
    PROFILE_TRAIN_BATCH=${PROFILE_TRAIN_BATCH:-4}
    PROFILE_REPEATS=${PROFILE_REPEATS:-2}
    PRETRAIN_MODELS=${PRETRAIN_MODELS:-albef copa}
    PRETRAIN_BF16_MODELS=${PRETRAIN_BF16_MODELS:-albef}
    PRETRAIN_ITERS=${PRETRAIN_ITERS:-3}
    TASK_PRECISIONS=${TASK_PRECISIONS:-fp32}
    FT_ITERS=${FT_ITERS:-2}
    EVAL_LIMIT=${EVAL_LIMIT:-32}
else
    SCALE=${SCALE:-base}
    PROFILE_MODELS=${PROFILE_MODELS:-albef,copa,trips,evit,random,tome,vilt}
    PROFILE_SIZES=${PROFILE_SIZES-224}
    PROFILE_EXTRA_SIZES=${PROFILE_EXTRA_SIZES-384}
    PROFILE_BATCH=${PROFILE_BATCH:-256}
    PROFILE_TRAIN_BATCH=${PROFILE_TRAIN_BATCH:-32}
    PROFILE_REPEATS=${PROFILE_REPEATS:-5}
    PRETRAIN_MODELS=${PRETRAIN_MODELS:-$ALL_MODELS}
    PRETRAIN_BF16_MODELS=${PRETRAIN_BF16_MODELS:-albef copa}
    PRETRAIN_ITERS=${PRETRAIN_ITERS:-20}
    TASK_PRECISIONS=${TASK_PRECISIONS:-fp32 bf16}
    FT_ITERS=${FT_ITERS:-5}
    EVAL_LIMIT=${EVAL_LIMIT:-256}
fi
PROFILE_PRECISIONS=${PROFILE_PRECISIONS:-fp32 bf16}
# which groups of stages run (a comma list): e.g. ONLY=env,profile re-measures without the functional checks
ONLY=${ONLY:-install,env,data,pretrain,tasks,profile}
# what `profile --tasks` costs: the pair (inference at PROFILE_BATCH) and the pre-training step at its own batch
PROFILE_TASKS=${PROFILE_TASKS-pair,pretrain@$PROFILE_TRAIN_BATCH}
TASK_MODELS=${TASK_MODELS:-albef copa}
TASKS=${TASKS:-retrieval vqa nlvr2 caption grounding}
if [ "${DEVICE%%:*}" = cuda ]; then
    JOBS=${JOBS:-12}
    DATA_WORKERS=${DATA_WORKERS:-12}
else
    JOBS=${JOBS:-1}
    DATA_WORKERS=${DATA_WORKERS:-2}
fi
JOB_THREADS=${JOB_THREADS:-$(( NPROC / JOBS > 0 ? NPROC / JOBS : 1 ))}
DEADLINE=$(( T0 + BUDGET_S ))
FUNC_DEADLINE=$(( DEADLINE - PROFILE_RESERVE_S ))

# ---------------------------------------------------------------- `prepare`: make the carried folders (CPU machine)
# .whl: wheels for Python 3.12 / manylinux x86_64 of what the GPU machine lacks (pinned to the versions tested);
# .gpu_pylib: pycocoevalcap's Python files only (its wheel is 104 MB of Java jars). Both git-ignored.
if [ "${1:-}" = prepare ]; then
    set -e
    rm -rf "$WHEELS" "$PYLIB"
    mkdir -p "$WHEELS" "$PYLIB"
    "$PY" -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
        --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d "$WHEELS" \
        mmengine==0.10.7 addict==2.4.0 yapf==0.43.0 termcolor==3.3.0 platformdirs==4.14.9 yacs==0.1.8 \
        pycocotools==2.0.11 tabulate==0.10.0 portalocker==4.4.2
    # fvcore and iopath publish only source archives: build them here (pure Python: py3-none-any)
    "$PY" -m pip wheel --no-deps -w "$WHEELS" fvcore==0.1.5.post20221221 iopath==0.1.10
    tmp=$(mktemp -d)
    "$PY" -m pip download --no-deps -d "$tmp" pycocoevalcap==1.2
    "$PY" - "$WHEELS" "$PYLIB" "$tmp"/pycocoevalcap-*.whl <<'EOF'
import glob, os, sys, zipfile
wheels, pylib, evalcap = sys.argv[1:4]
for path in sorted(glob.glob(os.path.join(wheels, "*.whl"))):
    with zipfile.ZipFile(path) as z:
        tags = [line.split(": ", 1)[1] for name in z.namelist() if name.endswith(".dist-info/WHEEL")
                for line in z.read(name).decode().splitlines() if line.startswith("Tag: ")]
    ok = all(t == "py3-none-any" or t.startswith(("cp312-cp312-manylinux", "cp312-abi3-manylinux")) for t in tags)
    print(f"{'ok ' if ok else 'BAD'} {os.path.basename(path)}: {', '.join(tags)}")
    if not ok:
        sys.exit(f"{path}: not installable on CPython 3.12 x86_64")
with zipfile.ZipFile(evalcap) as z:
    keep = [n for n in z.namelist() if n.endswith(".py") or n.endswith(("dist-info/METADATA", "dist-info/WHEEL",
                                                                        "dist-info/top_level.txt"))]
    z.extractall(pylib, keep)
print(f"{pylib}: {len(keep)} files of pycocoevalcap (no jars)")
EOF
    rm -rf "$tmp"
    du -sh "$WHEELS" "$PYLIB"
    exit 0
fi

mkdir -p "$OUT/logs" "$OUT/parts" "$WORK"
LOG=$OUT/log.txt
STAGES=$OUT/stages.tsv
: > "$LOG"
: > "$STAGES"
: > "$OUT/metrics.txt"

export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 MPLBACKEND=Agg PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
export MPLCONFIGDIR=$WORK/mpl
export PYTHONPATH="$ROOT:$PYLIB${PYTHONPATH:+:$PYTHONPATH}"

log() { printf '[%4ds] %s\n' "$(( $(date +%s) - T0 ))" "$*" | tee -a "$LOG"; }

# stage NAME LIMIT_S DEADLINE_EPOCH CMD...: run CMD under timeout (clamped to the deadline), output to
# $OUT/logs/NAME.log, one line in $STAGES (start, name, rc, seconds, status). Returns CMD's exit status.
stage() {
    local name=$1 limit=$2 deadline=$3
    shift 3
    local now left start end rc secs status
    now=$(date +%s)
    left=$(( deadline - now ))
    start=$(date +%s%N)
    if (( left < 10 )); then
        printf '%s\t%s\t-\t0\tskipped (no time left)\n' "$start" "$name" >> "$STAGES"
        log "SKIP  $name (no time left in the budget)"
        return 125
    fi
    (( limit > left )) && limit=$left
    log "START $name (limit ${limit}s)"
    { echo "# $*"; echo; } > "$OUT/logs/$name.log"
    # through `bash -c` so that CMD may be one of this script's (exported) functions; timeout ends the whole
    # process group (python and what it started) at the limit, SIGKILL 10 s later
    timeout -k 10 "$limit" bash -c '"$@"' "$name" "$@" >> "$OUT/logs/$name.log" 2>&1
    rc=$?
    end=$(date +%s%N)
    secs=$(( (end - start) / 100000000 ))
    secs=$(( secs / 10 )).$(( secs % 10 ))
    case $rc in
        0) status=ok ;;
        124|137) status="TIMEOUT after ${limit}s" ;;
        *) status="FAILED (exit $rc)" ;;
    esac
    printf '%s\t%s\t%s\t%s\t%s\n' "$start" "$name" "$rc" "$secs" "$status" >> "$STAGES"
    log "END   $name: $status, ${secs}s"
    if (( rc != 0 )); then
        { echo "    --- last lines of logs/$name.log ---"; tail -n 15 "$OUT/logs/$name.log" | sed 's/^/    /'; } >> "$LOG"
    fi
    return $rc
}

# Functions that stages run go through `bash -c` (under timeout): they and what they read are exported.
cli() { "$PY" -m harness.cli "$@"; }
export ROOT PY OUT WORK WHEELS PYLIB SITE NPROC DEVICE SCALE PROFILE_MODELS PROFILE_BATCH PROFILE_REPEATS
export -f cli

# wait for a free slot among JOBS background jobs
throttle() { while (( $(jobs -rp | wc -l) >= JOBS )); do wait -n 2>/dev/null || true; done; }
# record a stage that did not run
not_run() { printf '%s\t%s\t-\t0\t%s\n' "$(date +%s%N)" "$1" "$2" >> "$STAGES"; log "SKIP  $1 ($2)"; }

log "copa-bench GPU check: device $DEVICE, quick $QUICK, budget ${BUDGET_S}s (profile reserve" \
    "${PROFILE_RESERVE_S}s), $JOBS parallel jobs x $JOB_THREADS threads, out $OUT, scratch $WORK"

# ---------------------------------------------------------------- 1. install and environment
install_wheels() {
    rm -rf "$SITE" && mkdir -p "$SITE" || return 1
    ls -l "$WHEELS"/*.whl || return 1
    local pip=("$PY" -m pip)
    "$PY" -m pip --version || pip=(pip)   # GPU.md's plain `pip` when this python has no pip module
    "${pip[@]}" install --no-index --no-deps --disable-pip-version-check --target "$SITE" "$WHEELS"/*.whl
}
export -f install_wheels
need_install=$INSTALL
if [ "$INSTALL" = auto ]; then
    if "$PY" -c "import mmengine, fvcore, pycocotools" >/dev/null 2>&1; then need_install=0; else need_install=1; fi
fi
want() { [[ ",$ONLY," == *",$1,"* ]]; }
if ! want install; then
    not_run install "not in ONLY"
elif [ "$need_install" = 1 ]; then
    stage install 120 "$DEADLINE" install_wheels
    export PYTHONPATH="$SITE:$PYTHONPATH"
else
    not_run install "INSTALL=$INSTALL: mmengine, fvcore and pycocotools import already"
fi
log "PYTHONPATH=$PYTHONPATH"

env_report() {
    echo "== python"; "$PY" -c "import sys; print(sys.version)"
    echo "== nproc $NPROC"; free -g 2>/dev/null | head -2
    if command -v nvidia-smi >/dev/null 2>&1; then echo "== nvidia-smi"; nvidia-smi; else echo "== no nvidia-smi"; fi
    echo "== torch"
    "$PY" -c '
import torch
print("torch", torch.__version__, "cuda", torch.version.cuda, "cudnn", torch.backends.cudnn.version())
print("cuda available", torch.cuda.is_available(), "devices", torch.cuda.device_count())
if torch.cuda.is_available():
    p = torch.cuda.get_device_properties(0)
    print("device 0:", p.name, f"{p.total_memory / 2**30:.1f} GiB", "capability", f"{p.major}.{p.minor}",
          "bf16", torch.cuda.is_bf16_supported(), "tf32 matmul", torch.backends.cuda.matmul.allow_tf32)
'
    echo "== imports"
    "$PY" -c '
import importlib
from importlib import metadata
failed = []
for mod, dist in [("torch", "torch"), ("torchvision", "torchvision"), ("timm", "timm"),
                  ("transformers", "transformers"), ("tokenizers", "tokenizers"), ("safetensors", "safetensors"),
                  ("huggingface_hub", "huggingface-hub"), ("numpy", "numpy"), ("PIL", "pillow"),
                  ("pandas", "pandas"), ("matplotlib", "matplotlib"), ("scipy", "scipy"), ("yaml", "pyyaml"),
                  ("cv2", None), ("rich", "rich"), ("tqdm", "tqdm"), ("typing_extensions", "typing-extensions"),
                  ("mmengine", "mmengine"), ("addict", "addict"), ("yapf", "yapf"), ("termcolor", "termcolor"),
                  ("platformdirs", "platformdirs"), ("fvcore", "fvcore"), ("iopath", "iopath"), ("yacs", "yacs"),
                  ("tabulate", "tabulate"), ("portalocker", "portalocker"), ("pycocotools.coco", "pycocotools"),
                  ("pycocoevalcap.bleu.bleu", "pycocoevalcap"), ("pycocoevalcap.cider.cider", "pycocoevalcap"),
                  ("pkg_resources", None), ("mmengine.runner", None), ("fvcore.nn", None),
                  ("harness.cli", None), ("harness.runner", None), ("copa.build", None),
                  ("harness.profiling.cli", None)]:
    try:
        m = importlib.import_module(mod)
        try:
            version = metadata.version(dist) if dist else getattr(m, "__version__", "")
        except metadata.PackageNotFoundError:
            version = getattr(m, "__version__", "?")
        where = getattr(m, "__file__", None) or ""
        print(f"  ok      {mod:28s} {version}  {where}")
    except Exception as e:
        failed.append(mod)
        print(f"  MISSING {mod:28s} {type(e).__name__}: {e}")
print("missing:", ", ".join(failed) or "none")
# pkg_resources (setuptools) serves only mmengine'"'"'s "package::" config paths, which copa-bench does not use
raise SystemExit(1 if set(failed) - {"pkg_resources"} else 0)
'
}
export -f env_report
want env && stage env 90 "$DEADLINE" env_report
[ -f "$OUT/logs/env.log" ] && grep -E "^torch |^cuda available|^device 0|^missing" "$OUT/logs/env.log" | sed 's/^/    /' | tee -a "$LOG"

NAME=${NAME:-$("$PY" -c '
import re, sys
dev = sys.argv[1]
name = "cpu"
if dev.startswith("cuda"):
    import torch
    name = torch.cuda.get_device_name(torch.device(dev)) if torch.cuda.is_available() else "cuda_unavailable"
name = re.sub(r"^nvidia[ _-]*", "", name.strip().lower())
print(re.sub(r"[^a-z0-9]+", "_", name).strip("_"))
' "$DEVICE" 2>/dev/null)}
NAME=${NAME:-unknown}
export NAME
log "device name slug: $NAME (efficiency files: $OUT/gpu_$NAME.{json,md})"

# ---------------------------------------------------------------- 2. data
DATA=$WORK/data/tiny
want data && stage data_make 120 "$FUNC_DEADLINE" cli data make --out "$DATA" --preset tiny --workers "$DATA_WORKERS"

# ---------------------------------------------------------------- 3. pre-training (tiny, from a random ViT)
export OMP_NUM_THREADS=$JOB_THREADS
# (its output is split into words on purpose: `$(limit_opts ...)` unquoted)
limit_opts() { # val|test TASK: --cfg-options that cut that loader's set to EVAL_LIMIT samples (if the task has it)
    if [ -n "$EVAL_LIMIT" ] && grep -q "^${1}_dataloader" "$ROOT/configs/tasks/$2.py"; then
        echo "--cfg-options ${1}_dataloader.dataset.indices=$EVAL_LIMIT"
    fi
}
pretrain() { # MODEL PRECISION
    stage "pretrain_${1}_$2" 240 "$FUNC_DEADLINE" \
        cli train --model "$1" --task pretrain --scale tiny --data "$DATA" --work-dir "$WORK/pretrain/${1}_$2" \
        --max-iters "$PRETRAIN_ITERS" --vision-init none --device "$DEVICE" --precision "$2" $(limit_opts val pretrain)
}
if want pretrain; then
    for m in $PRETRAIN_MODELS; do throttle; pretrain "$m" fp32 & done
    for m in $PRETRAIN_BF16_MODELS; do throttle; pretrain "$m" bf16 & done
    wait
fi

# ---------------------------------------------------------------- 4. every task (albef, copa)
pretrain_checkpoint() { # MODEL PRECISION: that pre-training's last checkpoint, else the fp32 one
    local p
    for p in "$2" fp32; do
        if [ -f "$WORK/pretrain/${1}_$p/last_checkpoint" ]; then cat "$WORK/pretrain/${1}_$p/last_checkpoint"; return; fi
    done
    return 1
}
record_metrics() { # STAGE: the metric lines its test printed, appended in one write
    local block
    block=$(printf '== %s\n' "$1"; sed -n '/tested in/,$p' "$OUT/logs/$1.log")
    printf '%s\n' "$block" >> "$OUT/metrics.txt"
}
zeroshot() { # MODEL PRECISION TASK (retrieval | patch_detection): test the pre-training checkpoint itself
    local ckpt name=zeroshot_${3}_${1}_$2
    ckpt=$(pretrain_checkpoint "$1" "$2") || { not_run "$name" "no pre-training checkpoint"; return; }
    stage "$name" 180 "$FUNC_DEADLINE" \
        cli test --model "$1" --task "$3" --scale tiny --data "$DATA" --checkpoint "$ckpt" \
        --work-dir "$WORK/zeroshot/${3}_${1}_$2" --device "$DEVICE" --precision "$2" $(limit_opts test "$3") \
        && record_metrics "$name"
}
finetune() { # MODEL PRECISION TASK: FT_ITERS iterations from the pre-training checkpoint, then test
    local ckpt wd=$WORK/$3/${1}_$2
    ckpt=$(pretrain_checkpoint "$1" "$2") || { not_run "train_${3}_${1}_$2" "no pre-training checkpoint"; return; }
    stage "train_${3}_${1}_$2" 240 "$FUNC_DEADLINE" \
        cli train --model "$1" --task "$3" --scale tiny --data "$DATA" --work-dir "$wd" --checkpoint "$ckpt" \
        --max-iters "$FT_ITERS" --device "$DEVICE" --precision "$2" $(limit_opts val "$3") || return
    [ -f "$wd/last_checkpoint" ] || { not_run "test_${3}_${1}_$2" "training left no checkpoint"; return; }
    stage "test_${3}_${1}_$2" 180 "$FUNC_DEADLINE" \
        cli test --model "$1" --task "$3" --scale tiny --data "$DATA" --checkpoint "$(cat "$wd/last_checkpoint")" \
        --work-dir "$wd/test" --device "$DEVICE" --precision "$2" $(limit_opts test "$3") \
        && record_metrics "test_${3}_${1}_$2"
}
want tasks || TASK_PRECISIONS=
for p in $TASK_PRECISIONS; do
    for m in $TASK_MODELS; do
        throttle; zeroshot "$m" "$p" retrieval &
        case $m in albef|vilt) ;; *) throttle; zeroshot "$m" "$p" patch_detection & ;; esac
        for t in $TASKS; do throttle; finetune "$m" "$p" "$t" & done
    done
done
wait

# ---------------------------------------------------------------- 5. efficiency profile (alone on the device)
export OMP_NUM_THREADS=$NPROC
profile_cmd() { # TAG PRECISION [extra profile args]: one profile, its table (stdout) and rows (JSON) in parts/
    local tag=$1 precision=$2
    shift 2
    cli profile --scale "$SCALE" --models "$PROFILE_MODELS" --device "$DEVICE" --precision "$precision" \
        --batch "$PROFILE_BATCH" --repeats "$PROFILE_REPEATS" "$@" --json "$OUT/parts/profile_$tag.json" \
        > "$OUT/parts/profile_$tag.md.tmp" || return
    mv "$OUT/parts/profile_$tag.md.tmp" "$OUT/parts/profile_$tag.md"
}
merge_profiles() { # every part so far -> gpu_NAME.json (all rows) and gpu_NAME.md (one section per part)
    "$PY" -c '
import glob, json, os, sys
out, name = sys.argv[1], sys.argv[2]
rows, sections = [], []
for path in sorted(glob.glob(os.path.join(out, "parts", "profile_*.json")), key=os.path.getmtime):
    precision, size = os.path.basename(path)[len("profile_"):-len(".json")].split("_", 1)
    with open(path) as f:
        data = json.load(f)
    for row in data if isinstance(data, list) else [data]:
        if isinstance(row, dict):
            row.setdefault("precision", precision)
        rows.append(row)
    md = path[:-len(".json")] + ".md"
    if os.path.exists(md):
        with open(md) as f:
            sections.append(f"## {precision}, {size.replace(chr(95), chr(44))} px\n\n{f.read().strip()}\n")
with open(os.path.join(out, f"gpu_{name}.json"), "w") as f:
    json.dump(rows, f, indent=1)
    f.write("\n")
with open(os.path.join(out, f"gpu_{name}.md"), "w") as f:
    f.write(f"# Efficiency on {name}\n\nWritten by tools/gpu_check.sh (copa-bench profile); one section per "
            "precision and image size.\n\n" + "\n".join(sections))
print(f"gpu_{name}.json: {len(rows)} rows; gpu_{name}.md: {len(sections)} sections")
' "$OUT" "$NAME"
}
export -f profile_cmd merge_profiles
profile() { # PRECISION SIZES LIMIT_S
    local sizes=${2:-default} args=()
    local tag=${1}_${sizes//,/_}
    [ -n "$2" ] && args+=(--image-size "$2")
    [ -n "$PROFILE_TASKS" ] && args+=(--tasks "$PROFILE_TASKS")
    stage "profile_$tag" "$3" "$DEADLINE" profile_cmd "$tag" "$1" "${args[@]}"
    [ -f "$OUT/parts/profile_$tag.json" ] && stage "merge_$tag" 60 $(( DEADLINE + 60 )) merge_profiles
}
want profile || PROFILE_PRECISIONS=
for p in $PROFILE_PRECISIONS; do
    profile "$p" "$PROFILE_SIZES" 300
done
for p in $PROFILE_PRECISIONS; do
    [ -n "$PROFILE_EXTRA_SIZES" ] || break
    if (( DEADLINE - $(date +%s) >= PROFILE_EXTRA_MIN_S )); then
        profile "$p" "$PROFILE_EXTRA_SIZES" 300
    else
        not_run "profile_${p}_${PROFILE_EXTRA_SIZES//,/_}" "less than ${PROFILE_EXTRA_MIN_S}s left"
    fi
done

# ---------------------------------------------------------------- 6. summary
{
    echo
    echo "== summary: $(( $(date +%s) - T0 ))s in all (budget ${BUDGET_S}s); device $DEVICE ($NAME)"
    printf '%-40s %4s %8s  %s\n' stage rc seconds status
    sort -n "$STAGES" | while IFS=$'\t' read -r _ name rc secs status; do
        printf '%-40s %4s %8s  %s\n' "$name" "$rc" "$secs" "$status"
    done
    echo "stages: $(wc -l < "$STAGES"); ok $(grep -c $'\tok$' "$STAGES");" \
        "failed or timed out $(grep -cE $'\t(FAILED|TIMEOUT)' "$STAGES"); not run $(grep -c $'\t-\t' "$STAGES")"
    ls -l "$OUT/gpu_$NAME.json" "$OUT/gpu_$NAME.md" 2>&1
} | tee -a "$LOG"
# exit 0 only when every stage that ran passed
! grep -qE $'\t(FAILED|TIMEOUT)' "$STAGES"
