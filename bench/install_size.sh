#!/usr/bin/env bash
# The installed size of efface's base package: `pip install SOURCE` (no extras) into a fresh virtual environment,
# then the size of its site-packages, the distributions installed and the commands put on its PATH.
#
#   bench/install_size.sh SOURCE VENV      e.g. bench/install_size.sh . /tmp/venv-base
#
# SOURCE is a checkout (or a worktree of another commit, to compare: git worktree add /tmp/old REV). Wheels come
# from the registry (and PIP_FIND_LINKS); nothing else is needed.
set -euo pipefail
source=${1:?usage: bench/install_size.sh SOURCE VENV}
venv=${2:?usage: bench/install_size.sh SOURCE VENV}
rm -rf "$venv"
python3 -m venv "$venv"
"$venv/bin/pip" install --quiet "$source" > "$venv.log" 2>&1
site=$("$venv/bin/python" -c "import sysconfig; print(sysconfig.get_paths()['purelib'])")
echo "site-packages: $(du -sm "$site" | cut -f1) MiB"
"$venv/bin/pip" list --format freeze > "$venv.freeze"
echo "distributions: $(wc -l < "$venv.freeze")"
echo "commands: $(ls "$venv/bin" | grep -v -E '^(activate|Activate|python|pip)' | tr '\n' ' ')"
echo "largest:"
du -sm "$site"/* | sort -rn | head -8
