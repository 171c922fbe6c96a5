#!/usr/bin/env bash
# Installs the Orthanc PACS and its DICOMweb plugin from the Debian packages (orthanc, orthanc-dicomweb) when absent,
# with a headless Chromium (chromium-headless-shell: the browser the tests open MONAI Label's OHIF viewer in, and
# that takes the docs' screenshot), and leaves no system Orthanc service running: the project starts its own, on a
# folder of its choice, with scripts/orthanc.sh. Needs apt-get (Debian/Ubuntu); runs as root, or through sudo
# (non-interactive) otherwise. Re-running is cheap: nothing is installed while the packages are. Prints where they are:
#
#   orthanc: /usr/sbin/Orthanc (1.10.1)
#   dicomweb plugin: /usr/share/orthanc/plugins/libOrthancDicomWeb.so
#   headless chromium: /usr/bin/chromium-headless-shell
set -euo pipefail
packages=(orthanc orthanc-dicomweb chromium-headless-shell)
die() { echo "setup_orthanc.sh: $*" >&2; exit 1; }

if [ "$(id -u)" = 0 ]; then
    as_root=()
elif command -v sudo > /dev/null; then
    as_root=(sudo -n)
else
    as_root=(__not_root__)
fi

installed() { [ "$(dpkg-query -W -f='${Status}' "$1" 2>/dev/null)" = "install ok installed" ]; }

missing=()
for p in "${packages[@]}"; do
    installed "$p" || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
    command -v apt-get > /dev/null || die "apt-get not found: install ${missing[*]} with your system's package manager"
    [ "${as_root[0]:-}" != __not_root__ ] || die "installing ${missing[*]} needs root: run as root or install sudo"
    echo "[setup-orthanc] installing ${missing[*]} (Debian packages)"
    # policy-rc.d 101: the packages' maintainer scripts start no service (invoke-rc.d honours it); removed afterwards
    rc=/usr/sbin/policy-rc.d
    made_rc=0
    if [ ! -e "$rc" ]; then
        printf '#!/bin/sh\nexit 101\n' | "${as_root[@]}" tee "$rc" > /dev/null
        "${as_root[@]}" chmod 755 "$rc"
        made_rc=1
    fi
    trap 'if [ "$made_rc" = 1 ]; then "${as_root[@]}" rm -f "$rc"; fi' EXIT
    "${as_root[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -qq
    "${as_root[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
        "${missing[@]}" > /dev/null
fi

# a system service the packages may have started anyway (a host with systemd or sysvinit and no policy-rc.d)
if pgrep -x Orthanc -u orthanc > /dev/null 2>&1; then
    echo "[setup-orthanc] stopping the system orthanc service (scripts/orthanc.sh starts its own)"
    if command -v systemctl > /dev/null && [ -d /run/systemd/system ]; then
        "${as_root[@]}" systemctl stop orthanc || true
        "${as_root[@]}" systemctl disable orthanc > /dev/null 2>&1 || true
    elif [ -x /etc/init.d/orthanc ]; then
        "${as_root[@]}" /etc/init.d/orthanc stop || true
    fi
    if pgrep -x Orthanc -u orthanc > /dev/null 2>&1; then
        echo "setup_orthanc.sh: warning: the system orthanc service still runs (ports 8042/4242 by default)" >&2
    fi
fi

binary="$(command -v Orthanc || true)"
[ -n "$binary" ] || binary=/usr/sbin/Orthanc
[ -x "$binary" ] || die "the orthanc package is installed but $binary is missing"
plugin="$(dpkg -L orthanc-dicomweb | grep -E '/libOrthancDicomWeb\.so[.0-9]*$' | head -n 1 || true)"
[ -n "$plugin" ] && [ -f "$plugin" ] || die "the orthanc-dicomweb package is installed but its plugin (.so) is missing"
echo "orthanc: $binary ($("$binary" --version 2>/dev/null | head -n 1 | awk '{print $NF}'))"
echo "dicomweb plugin: $plugin"
echo "headless chromium: $(command -v chromium-headless-shell || echo 'missing')"
