#!/usr/bin/env bash
# A compile-only venv for `make aot` (lst_jax.tools.aot): .venv-aot-tpu (libtpu) or .venv-aot-cuda
# (the CUDA 13 plugin, ptxas, nvvm and cuDNN wheels), layered over .venv: its site-packages are
# added through a .pth file, so only the platform's compiler is installed here, at the pins of
# pyproject.toml's `tpu` / `cuda` extra. CPU runs use .venv and never load these packages.
set -euo pipefail
platform=${1:?usage: tools/aot_venv.sh tpu|cuda}
case "$platform" in tpu|cuda) ;; *) echo "error: platform must be tpu or cuda, not $platform" >&2; exit 2 ;; esac
cd "$(dirname "$0")/.."
base=.venv
venv=.venv-aot-$platform
[ -x "$base/bin/python" ] || { echo "error: $base is missing: run make setup first" >&2; exit 2; }
echo ">> creating $venv (the $platform compiler, over $base)"
rm -rf "$venv"
"$("$base/bin/python" -c 'import sys; print(sys._base_executable)')" -m venv "$venv"
base_site=$("$base/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
site=$("$venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
echo "import site; site.addsitedir('$(realpath "$base_site")')" > "$site/lst_jax_base.pth"
"$venv/bin/python" -m pip install -q --disable-pip-version-check -e ".[$platform]"
JAX_PLATFORMS=cpu "$venv/bin/python" -c "from lst_jax import targets; assert targets.has_compiler('$platform')"
touch "$venv/.installed"
