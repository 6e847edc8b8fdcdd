#!/usr/bin/env bash
# Run the smoke subset of the tests (`pytest -m smoke`) on the oldest supported stack.
#
# The stack (torch 2.1.2, torchvision 0.16.2, numpy < 2, mmcv 2.1.0 built for that
# torch, mmengine / mmdet / mmpretrain from their ranges) lives in its own virtualenv,
# and mmsfr is installed there from a copy of this working tree: the C++ extension is
# built in place, and the copy keeps it apart from the one built against the newest
# torch in .venv.
#   OLDEST_VENV       the virtualenv (default: .venv-oldest)
#   OLDEST_SRC        the copy of the tree (default: build/oldest-src)
#   MMSFR_WHEEL_DIR   optional directory with an mmcv 2.1.0 wheel built for torch 2.1.2
#   MMSFR_FIXTURES    the parity fixtures (default: ../shared/fixtures)
#   PYTEST_ARGS       more pytest options
#
# Example:  tools/test_oldest.sh        (or: make test-oldest)
set -euo pipefail
cd "$(dirname "$0")/.."

OLDEST_VENV=$(realpath -m "${OLDEST_VENV:-.venv-oldest}")
OLDEST_SRC=$(realpath -m "${OLDEST_SRC:-build/oldest-src}")
# The parity fixtures: as for `make test`, ../shared/fixtures beside the checkout.
export MMSFR_FIXTURES="${MMSFR_FIXTURES:-$(realpath -m ../shared/fixtures)}"

# The working tree as git sees it (tracked and untracked files, ignored ones left out).
# Built files (the extension, build/) are kept; tests/, configs/, tools/ are laid anew.
mkdir -p "$OLDEST_SRC"
rm -rf "$OLDEST_SRC/tests" "$OLDEST_SRC/configs" "$OLDEST_SRC/tools"
git ls-files -z --cached --others --exclude-standard \
    | tar --null -T - -cf - | tar -xf - -C "$OLDEST_SRC"
cd "$OLDEST_SRC"
VENV="$OLDEST_VENV" MMSFR_STACK=oldest tools/setup_env.sh
# shellcheck disable=SC2086
"$OLDEST_VENV/bin/python" -m pytest tests -m smoke ${PYTEST_ARGS:-}
