#!/bin/sh
# Runs the suite's non-lab tests under every other CPython >= 3.11 on the PATH
# (python3.12, python3.13, python3.14, or pyenv's builds of them), the core compiled by
# mypyc for each, as a user of that version would install it. The README says "CPython
# 3.11+": this checks it. An interpreter that is missing is skipped with a line saying so.
#
# Each runs in a copy of the working tree (an editable install writes the compiled
# modules beside the sources, and would take the main interpreter's away) and a venv,
# both in a scratch directory removed at the end. The lab tests run under the main
# interpreter only: they test the network, which is the same whatever the version.
set -eu
here=$(cd "$(dirname "$0")/.." && pwd)
main=$(python3 -c 'import sys; print("%d.%d" % sys.version_info[:2])')
scratch=$(mktemp -d "${TMPDIR:-/tmp}/ice-engine-pythons.XXXXXX")
trap 'rm -rf "$scratch"' EXIT
for version in 3.12 3.13 3.14; do
    [ "$version" = "$main" ] && continue
    python="python$version"
    if ! "$python" -c 'import venv' >/dev/null 2>&1 && command -v pyenv >/dev/null 2>&1; then
        python=$(ls -d "$(pyenv root)/versions/$version".*/bin/"python$version" 2>/dev/null \
            | sort -V | tail -n 1)
    fi
    if [ -z "$python" ] || ! "$python" -c 'import venv' >/dev/null 2>&1; then
        echo "other-pythons: python$version not found, skipped" >&2
        continue
    fi
    echo "other-pythons: $("$python" -c 'import sys; print(sys.version.split()[0])')" >&2
    tree="$scratch/tree$version"
    mkdir "$tree"
    (cd "$here" && git ls-files -co --exclude-standard -z | grep -zv '\.so$' \
        | xargs -0 cp --parents -t "$tree")
    "$python" -m venv "$scratch/venv$version"
    venv_python="$scratch/venv$version/bin/python"
    (cd "$tree" \
        && "$venv_python" -m pip install -q --disable-pip-version-check -e '.[test]' \
        && "$venv_python" -c 'import sys, ice_engine.compiled as c, ice_engine.gathering as g
c.is_compiled(g) or sys.exit("other-pythons: mypyc did not compile the core")' \
        && "$venv_python" -m pytest -q -p no:cacheprovider -m 'not lab and not slow')
done
