#!/usr/bin/env bash
# Builds the aziot-tpm Debian package with dpkg-buildpackage and debhelper, then checks it with
# lintian. Installs the packaging tools it needs with apt-get (through scripts/setup.sh).
set -euo pipefail

usage() {
  cat <<'EOF'
Usage: bash scripts/package.sh [--bin-dir DIR] [--out DIR] [--no-lintian]

Builds aziot-tpm_<version>_<arch>.deb: keyd-tpm and identityd-dps in /usr/libexec/aziot-tpm,
the aziot-tpm command in /usr/bin, the systemd units, a tpmd config snippet, the super-config
template and the docs (docs/install.md says what goes where and why).

  --bin-dir DIR   package the binaries already built in DIR (e.g. target/debug, as the package
                  tests do) instead of making a release build first
  --out DIR       where to put the .deb (default: target/debian)
  --no-lintian    skip the lintian check (it fails the build on any error or warning)

Prints the path of the .deb on the last line of stdout.
EOF
}

root=$(cd "$(dirname "$0")/.." && pwd)
bin_dir=""
out="$root/target/debian"
lintian=1
while [ $# -gt 0 ]; do
  case "$1" in
    --bin-dir) bin_dir=${2:?--bin-dir needs a directory}; shift 2 ;;
    --out) out=${2:?--out needs a directory}; shift 2 ;;
    --no-lintian) lintian=0; shift ;;
    -h|--help) usage; exit 0 ;;
    *) echo "package.sh: unknown argument '$1'" >&2; usage >&2; exit 2 ;;
  esac
done

bash "$root/scripts/setup.sh" debhelper dpkg-dev help2man lintian >&2

if [ -z "$bin_dir" ]; then
  echo "package.sh: release build of keyd-tpm, identityd-dps and aziot-tpm" >&2
  (cd "$root" && cargo build --release --locked -p keyd-tpm -p identityd-dps -p aziot-tpm-cli >&2)
  bin_dir="$root/target/release"
fi
bin_dir=$(cd "$bin_dir" && pwd)
for bin in keyd-tpm identityd-dps aziot-tpm; do
  if [ ! -x "$bin_dir/$bin" ]; then
    echo "package.sh: $bin_dir/$bin is missing; build it first (cargo build --workspace) or drop --bin-dir" >&2
    exit 1
  fi
done

# dpkg-buildpackage writes next to the source tree and into debian/: build in a copy under
# target/ (one per run, so runs may overlap) and leave the work tree clean.
version=$(dpkg-parsechangelog -l "$root/debian/changelog" -S Version)
mkdir -p "$root/target" "$out"
stage=$(mktemp -d "$root/target/debian-build.XXXXXX")
trap 'rm -rf "$stage"' EXIT
mkdir -p "$stage/aziot-tpm-$version"
for part in debian contrib/systemd docs README.md; do
  mkdir -p "$stage/aziot-tpm-$version/$(dirname "$part")"
  cp -a "$root/$part" "$stage/aziot-tpm-$version/$part"
done
(
  cd "$stage/aziot-tpm-$version"
  AZIOT_TPM_BIN_DIR="$bin_dir" dpkg-buildpackage -b -us -uc >&2
)
deb="aziot-tpm_${version}_$(dpkg-architecture -qDEB_HOST_ARCH).deb"
mv "$stage/$deb" "$out/$deb"

if [ "$lintian" = 1 ]; then
  as_root=()
  [ "$(id -u)" -ne 0 ] || as_root=(--allow-root)
  echo "package.sh: lintian $deb" >&2
  lintian "${as_root[@]}" --fail-on error,warning --display-info "$out/$deb" >&2
fi
echo "$out/$deb"
