#!/usr/bin/env bash
# Install a built ESG Workbench for the current user on Linux: the app menu entry, the
# icon in every size, and `esg-workbench` on the PATH (~/.local/bin). The app itself stays
# in its folder: run this from the built folder (dist/esg-workbench/install.sh), or pass
# the folder. Undo with: install.sh --uninstall
set -euo pipefail

data="${XDG_DATA_HOME:-$HOME/.local/share}"
bin="$HOME/.local/bin"

if [ "${1:-}" = "--uninstall" ]; then
    rm -f "$data/applications/esg-workbench.desktop" "$bin/esg-workbench"
    find "$data/icons/hicolor" -name 'esg-workbench.*' -delete 2>/dev/null || true
    echo "removed the menu entry, icons and $bin/esg-workbench"
    exit 0
fi
app_dir="$(cd "${1:-$(dirname "$0")}" 2>/dev/null && pwd)" || { echo "no such folder: $1" >&2; exit 2; }
[ -x "$app_dir/esg-workbench" ] || { echo "$app_dir has no esg-workbench binary (build it: python packaging/build.py)" >&2; exit 2; }

mkdir -p "$data/applications" "$data/icons" "$bin"
# the menu entry starts the binary by its full path: a desktop session's PATH may lack ~/.local/bin
sed "s|^Exec=.*|Exec=\"$app_dir/esg-workbench\"|" "$app_dir/share/applications/esg-workbench.desktop" \
    > "$data/applications/esg-workbench.desktop"
cp -r "$app_dir/share/icons/hicolor" "$data/icons/"
ln -sf "$app_dir/esg-workbench" "$bin/esg-workbench"
command -v update-desktop-database >/dev/null && update-desktop-database -q "$data/applications" || true
command -v gtk-update-icon-cache >/dev/null && gtk-update-icon-cache -q -t "$data/icons/hicolor" || true
echo "installed: $data/applications/esg-workbench.desktop, icons in $data/icons/hicolor, $bin/esg-workbench"
