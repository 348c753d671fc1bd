#!/usr/bin/env bash
# Fill an image's wheelhouse folder with every wheel its requirements need, so the image builds
# with `--no-index --find-links` and needs no registry or package index at build time.
#
#   containers/fill-wheelhouse.sh containers/trainer
#
# The wheels are resolved by the interpreter the Debian base image installs (Debian's python3,
# on this machine too), not by the project's virtualenv: environment markers such as
# `python_full_version < "3.11.3"` must be decided for the image's Python. pip uses this
# machine's configuration (its index and find-links, such as a local copy of the CPU torch
# wheel). `pip wheel` rather than `pip download`: a few dependencies (antlr4-python3-runtime,
# for hydra) exist only as source, and the offline build must need no compiler or setuptools.
# A stamp of the requirements and the interpreter skips the work when nothing changed.
set -euo pipefail

image_dir="${1:?usage: $0 containers/<image>}"
python="${WHEELHOUSE_PYTHON:-/usr/bin/python3}"
venv="${WHEELHOUSE_VENV:-${TMPDIR:-/tmp}/dpo-wheelhouse-venv-$(basename "$image_dir")}"
wheelhouse="$image_dir/wheelhouse"

stamp="$wheelhouse/.filled-$( (cat "$image_dir/requirements.txt"; "$python" -VV) | sha256sum | cut -c1-16)"
if [[ -f "$stamp" ]]; then
    echo "$wheelhouse is filled for these requirements: reusing it"
    exit 0
fi
if [[ ! -x "$venv/bin/pip" ]]; then
    "$python" -m venv "$venv" || {
        echo "cannot create a virtualenv with $python: apt-get install -y python3-venv" >&2
        exit 1
    }
fi
mkdir -p "$wheelhouse"
"$venv/bin/pip" wheel --quiet --disable-pip-version-check --wheel-dir "$wheelhouse" --find-links "$wheelhouse" \
    -r "$image_dir/requirements.txt" 2> >(grep -v "is ignored: it is neither a file nor a directory" >&2)
rm -f "$wheelhouse"/.filled-*
touch "$stamp"
echo "$(find "$wheelhouse" -name '*.whl' | wc -l) wheels in $wheelhouse"
