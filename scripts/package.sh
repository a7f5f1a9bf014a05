#!/usr/bin/env bash
# Builds the aziot-tpm Debian package with dpkg-buildpackage and debhelper, then checks it with
# lintian. Installs the packaging tools it needs with apt-get (through scripts/setup.sh).
set -euo pipefail

usage() {
  cat <<'EOF'
Usage: bash scripts/package.sh [--arch amd64|arm64|armhf] [--debug] [--bin-dir DIR] [--out DIR] [--no-lintian]

Builds aziot-tpm_<version>_<arch>.deb: keyd-tpm and identityd-dps in /usr/libexec/aziot-tpm,
the aziot-tpm command in /usr/bin, the systemd units, a tpmd config snippet, the super-config
template and the docs (docs/install.md says what goes where and why).

  --arch ARCH     the Debian architecture to build for (default: this machine's). Another one
                  is cross-compiled: the Rust target (rustup target add), Debian's cross
                  compiler, the target's libraries through multiarch (dpkg --add-architecture)
                  and qemu-user to run the command for its man page are installed as needed
  --debug         build the debug profile instead of release (the package tests do: the same
                  files, built in a fraction of the time)
  --bin-dir DIR   package the binaries already built in DIR (e.g. target/debug, as the package
                  tests do) instead of building them first
  --out DIR       where to put the .deb (default: target/debian)
  --no-lintian    skip the lintian check (it fails the build on any error or warning)

Prints the path of the .deb on the last line of stdout.
EOF
}

root=$(cd "$(dirname "$0")/.." && pwd)
host_arch=$(dpkg --print-architecture)
arch=$host_arch
profile=release
bin_dir=""
out="$root/target/debian"
lintian=1
while [ $# -gt 0 ]; do
  case "$1" in
    --arch) arch=${2:?--arch needs amd64, arm64 or armhf}; shift 2 ;;
    --debug) profile=debug; shift ;;
    --bin-dir) bin_dir=${2:?--bin-dir needs a directory}; shift 2 ;;
    --out) out=${2:?--out needs a directory}; shift 2 ;;
    --no-lintian) lintian=0; shift ;;
    -h|--help) usage; exit 0 ;;
    *) echo "package.sh: unknown argument '$1'" >&2; usage >&2; exit 2 ;;
  esac
done

# The Rust target, the GNU triplet of Debian's toolchain and the ELF machine of each architecture.
case "$arch" in
  amd64) rust_target=x86_64-unknown-linux-gnu gnu=x86_64-linux-gnu elf_machine=62 ;;
  arm64) rust_target=aarch64-unknown-linux-gnu gnu=aarch64-linux-gnu elf_machine=183 ;;
  armhf) rust_target=armv7-unknown-linux-gnueabihf gnu=arm-linux-gnueabihf elf_machine=40 ;;
  *) echo "package.sh: --arch '$arch' is not one of amd64, arm64, armhf" >&2; exit 2 ;;
esac

tools=(debhelper dpkg-dev help2man lintian)
if [ "$arch" != "$host_arch" ]; then
  if ! dpkg --print-foreign-architectures | grep -qxF "$arch"; then
    echo "package.sh: dpkg --add-architecture $arch (for the target's libraries)" >&2
    sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    $sudo dpkg --add-architecture "$arch"
  fi
  # The cross compiler and linker; the target's C library, OpenSSL, tpm2-tss and pkg-config
  # (which brings $gnu-pkg-config, reading the target's .pc files); qemu-user runs the target's
  # aziot-tpm for help2man.
  tools+=("gcc-$gnu" "libc6-dev:$arch" "libssl-dev:$arch" "libtss2-dev:$arch" "pkg-config:$arch" qemu-user-static)
fi
bash "$root/scripts/setup.sh" "${tools[@]}" >&2

target_dir=${CARGO_TARGET_DIR:-$root/target}
if [ -z "$bin_dir" ]; then
  cargo_args=(--locked -p keyd-tpm -p identityd-dps -p aziot-tpm-cli)
  [ "$profile" = debug ] || cargo_args+=(--release)
  bin_dir="$target_dir/$profile"
  if [ "$arch" != "$host_arch" ]; then
    if ! rustup target list --installed 2>/dev/null | grep -qxF "$rust_target"; then
      command -v rustup > /dev/null || { echo "package.sh: rustup is needed to add the Rust target $rust_target" >&2; exit 1; }
      echo "package.sh: rustup target add $rust_target" >&2
      rustup target add "$rust_target" >&2
    fi
    # cargo links with Debian's cross gcc; the cc crate compiles with it; the pkg-config crate
    # asks $gnu-pkg-config, so openssl-sys and tss-esapi-sys find the target's libraries.
    target_var=$(tr '[:lower:]-' '[:upper:]_' <<<"$rust_target")
    export "CARGO_TARGET_${target_var}_LINKER=$gnu-gcc" "CC_${rust_target//-/_}=$gnu-gcc" \
      "PKG_CONFIG_${rust_target//-/_}=$gnu-pkg-config"
    cargo_args+=(--target "$rust_target")
    bin_dir="$target_dir/$rust_target/$profile"
  fi
  echo "package.sh: $profile build of keyd-tpm, identityd-dps and aziot-tpm for $arch" >&2
  # A build to package, not to iterate on: incremental state would only take disk.
  (cd "$root" && CARGO_INCREMENTAL=${CARGO_INCREMENTAL:-0} nice cargo build "${cargo_args[@]}" >&2)
fi
bin_dir=$(cd "$bin_dir" && pwd)
for bin in keyd-tpm identityd-dps aziot-tpm; do
  if [ ! -x "$bin_dir/$bin" ]; then
    echo "package.sh: $bin_dir/$bin is missing; build it first (cargo build --workspace) or drop --bin-dir" >&2
    exit 1
  fi
  # e_machine, the 16-bit field at offset 18 of the ELF header (little-endian on all three).
  machine=$(od -An -tu2 -j18 -N2 "$bin_dir/$bin" | tr -d ' ')
  if [ "$machine" != "$elf_machine" ]; then
    echo "package.sh: $bin_dir/$bin is not built for $arch (ELF machine $machine, not $elf_machine); build it with --target $rust_target or drop --bin-dir" >&2
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
  build_env=("AZIOT_TPM_BIN_DIR=$bin_dir")
  # Cross: dpkg-architecture checks CC against the target; the tests run in CI, not here.
  [ "$arch" = "$host_arch" ] || build_env+=("CC=$gnu-gcc" "DEB_BUILD_OPTIONS=nocheck ${DEB_BUILD_OPTIONS:-}")
  env "${build_env[@]}" dpkg-buildpackage -b -us -uc --host-arch "$arch" >&2
)
deb="aziot-tpm_${version}_$arch.deb"
mv "$stage/$deb" "$out/$deb"

if [ "$lintian" = 1 ]; then
  as_root=()
  [ "$(id -u)" -ne 0 ] || as_root=(--allow-root)
  echo "package.sh: lintian $deb" >&2
  lintian "${as_root[@]}" --fail-on error,warning --display-info "$out/$deb" >&2
fi
echo "$out/$deb"
