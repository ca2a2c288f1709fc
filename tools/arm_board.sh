#!/usr/bin/env bash
# An emulated arm64 board for edgeprune's TVM path: an aarch64 TVM RPC server run under
# QEMU user-mode emulation, registered with a TVM RPC tracker like a real Raspberry Pi would be.
#
#   tools/arm_board.sh setup                    build the arm64 userland once (needs Debian's and PyPI's registries)
#   tools/arm_board.sh check                    exit 0 when the board can start here, else print why (one line)
#   tools/arm_board.sh dir                      print the board folder
#   tools/arm_board.sh server --tracker H:P [--key K] [--port P]   run the board's RPC server (foreground)
#   tools/arm_board.sh start  --tracker H:P [--key K] [--port P]   the same in the background (pid in DIR/run/)
#   tools/arm_board.sh stop                     stop the server started by `start`
#
# The board folder is $EDGEPRUNE_ARM_BOARD_DIR, else $EDGEPRUNE_CACHE_DIR/arm64-board, else
# ${XDG_CACHE_HOME:-~/.cache}/edgeprune/arm64-board: never the repository. It holds
#   rootfs/   a Debian arm64 minbase userland (debootstrap --foreign: unpacked, never chrooted) with python3,
#             plus the aarch64 apache-tvm wheel and its dependencies in rootfs/opt/edgeprune/site
#   bin/python3   a host shell script: qemu-aarch64-static -L rootfs rootfs/usr/bin/python3 "$@"
#   READY     written last, with what was installed
# Without binfmt_misc (containers, CI) an emulated process cannot exec another aarch64 binary; the
# TVM RPC server starts its workers with sys.executable, so a sitecustomize.py in the site folder
# points sys.executable at bin/python3 (a host script, which the host kernel can exec).
# Only setup needs the network (Debian's archive for debootstrap, PyPI for the wheels); the
# other commands run offline. See docs/tvm.md, "An emulated ARM board".
set -euo pipefail

TVM_VERSION=${EDGEPRUNE_ARM_TVM_VERSION:-0.27.0.post1}
TVM_FFI_VERSION=${EDGEPRUNE_ARM_TVM_FFI_VERSION:-0.1.14.post1}
SUITE=${EDGEPRUNE_ARM_SUITE:-bookworm}
PYVER=${EDGEPRUNE_ARM_PYTHON:-3.11}  # bookworm's python3
MIRROR=${EDGEPRUNE_ARM_MIRROR:-}     # empty: debootstrap's default Debian mirror
HOST_PY=${PY:-python3}

die() { echo "arm_board: $*" >&2; exit 1; }

board_dir() {
  if [ -n "${EDGEPRUNE_ARM_BOARD_DIR:-}" ]; then
    echo "$EDGEPRUNE_ARM_BOARD_DIR"
  elif [ -n "${EDGEPRUNE_CACHE_DIR:-}" ]; then
    echo "$EDGEPRUNE_CACHE_DIR/arm64-board"
  else
    echo "${XDG_CACHE_HOME:-$HOME/.cache}/edgeprune/arm64-board"
  fi
}

DIR=$(board_dir)
ROOT="$DIR/rootfs"
SITE="$ROOT/opt/edgeprune/site"

qemu_bin() {
  command -v qemu-aarch64-static 2>/dev/null || command -v qemu-aarch64 2>/dev/null || true
}

# one line saying what is missing, or nothing when the board can start
missing() {
  if [ -z "$(qemu_bin)" ]; then
    echo "qemu-aarch64 not installed (apt-get install qemu-user-static)"
  elif [ ! -f "$DIR/READY" ]; then
    echo "no arm64 board userland at $DIR (run tools/arm_board.sh setup once; it needs the package registries)"
  elif [ ! -x "$DIR/bin/python3" ]; then
    echo "the arm64 board at $DIR is incomplete (bin/python3 missing; run tools/arm_board.sh setup again)"
  fi
}

need_host_tools() {
  local pkgs=()
  [ -n "$(qemu_bin)" ] || pkgs+=(qemu-user-static)
  command -v debootstrap >/dev/null 2>&1 || [ -x /usr/sbin/debootstrap ] || pkgs+=(debootstrap)
  command -v dpkg-deb >/dev/null 2>&1 || pkgs+=(dpkg)
  # links the cross-compiled engine into a .so here: the board cannot run a compiler (see the header)
  command -v aarch64-linux-gnu-gcc >/dev/null 2>&1 || pkgs+=(gcc-aarch64-linux-gnu)
  [ ${#pkgs[@]} -eq 0 ] && return 0
  if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "arm_board: installing ${pkgs[*]}"
    apt-get update -q >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${pkgs[@]}" >/dev/null
  else
    die "needs ${pkgs[*]} (apt-get install ${pkgs[*]}, as root)"
  fi
}

write_launcher() {
  local root=$1 bin=$2 qemu
  qemu=$(qemu_bin)
  mkdir -p "$bin" "$root/opt/edgeprune/site"
  # the emulated python: a host script, so that sys.executable can be exec'd without binfmt_misc
  cat >"$bin/python3" <<EOF
#!/bin/sh
# the arm64 board's python3 under QEMU user-mode emulation (written by tools/arm_board.sh)
ROOT='$DIR/rootfs'
QEMU=\$(command -v qemu-aarch64-static || command -v qemu-aarch64 || echo '$qemu')
export PYTHONPATH="\$ROOT/opt/edgeprune/site"
export PYTHONNOUSERSITE=1
export EDGEPRUNE_BOARD_PYTHON='$DIR/bin/python3'
unset PYTHONHOME
exec "\$QEMU" -L "\$ROOT" "\$ROOT/usr/bin/python3" "\$@"
EOF
  chmod +x "$bin/python3"
  cat >"$root/opt/edgeprune/site/sitecustomize.py" <<'EOF'
"""Written by edgeprune's tools/arm_board.sh: child pythons (TVM's PopenWorker) start through the QEMU launcher."""
import os
import sys

_exe = os.environ.get("EDGEPRUNE_BOARD_PYTHON")
if _exe:
    sys.executable = _exe
EOF
}

cmd_setup() {
  if [ -f "$DIR/READY" ] && [ -x "$DIR/bin/python3" ]; then
    echo "arm_board: ready at $DIR ($(head -1 "$DIR/READY"))"
    return 0
  fi
  need_host_tools
  local t0 tmp wheels
  t0=$(date +%s)
  mkdir -p "$DIR"
  tmp="$DIR/rootfs.partial"
  rm -rf "$tmp" "$DIR/wheels.partial"
  echo "arm_board: debootstrap --arch=arm64 --variant=minbase --foreign $SUITE into $tmp"
  # --foreign: download and unpack only; the second stage would chroot into arm64 binaries (needs binfmt_misc)
  # shellcheck disable=SC2086
  debootstrap --arch=arm64 --variant=minbase --foreign --include=python3 "$SUITE" "$tmp" $MIRROR >"$DIR/setup.log" 2>&1 \
    || die "debootstrap failed (last line: $(tail -1 "$DIR/setup.log"); full log $DIR/setup.log)"
  # unpack every downloaded package (the first stage unpacks only the 'required' ones): unconfigured, enough for python3
  for deb in "$tmp"/var/cache/apt/archives/*.deb; do
    dpkg-deb -x "$deb" "$tmp"
  done
  rm -f "$tmp"/var/cache/apt/archives/*.deb
  [ -x "$tmp/usr/bin/python$PYVER" ] || die "the userland has no python$PYVER (EDGEPRUNE_ARM_PYTHON?)"
  echo "arm_board: aarch64 wheels: apache-tvm==$TVM_VERSION apache-tvm-ffi==$TVM_FFI_VERSION + deps (python $PYVER)"
  wheels="$DIR/wheels.partial"
  "$HOST_PY" -m pip download -q -d "$wheels" --only-binary=:all: --implementation cp --python-version "$PYVER" \
    --platform manylinux_2_28_aarch64 --platform manylinux2014_aarch64 \
    "apache-tvm==$TVM_VERSION" "apache-tvm-ffi==$TVM_FFI_VERSION" tornado psutil cloudpickle >>"$DIR/setup.log" 2>&1 \
    || die "pip download of the aarch64 wheels failed (see $DIR/setup.log)"
  "$HOST_PY" -m pip install -q --no-index --find-links "$wheels" --target "$tmp/opt/edgeprune/site" --only-binary=:all: \
    --implementation cp --python-version "$PYVER" --platform manylinux_2_28_aarch64 --platform manylinux2014_aarch64 \
    "apache-tvm==$TVM_VERSION" "apache-tvm-ffi==$TVM_FFI_VERSION" tornado psutil cloudpickle >>"$DIR/setup.log" 2>&1 \
    || die "installing the aarch64 wheels into the userland failed (see $DIR/setup.log)"
  rm -rf "$wheels"
  rm -rf "$ROOT"
  mv "$tmp" "$ROOT"
  write_launcher "$ROOT" "$DIR/bin"
  local t1 smoke
  t1=$(date +%s)
  smoke=$("$DIR/bin/python3" -c 'import platform, numpy, tvm; from tvm import rpc; print(platform.machine(), "tvm", tvm.__version__, "numpy", numpy.__version__)') \
    || die "the emulated python cannot import tvm (see above)"
  case "$smoke" in aarch64*) ;; *) die "the board python is not aarch64: $smoke" ;; esac
  {
    echo "$SUITE arm64, python $PYVER, $smoke"
    echo "built $(date -u +%Y-%m-%dT%H:%M:%SZ) in $((t1 - t0)) s; import check $(($(date +%s) - t1)) s under $(qemu_bin)"
    echo "size $(du -sh "$ROOT" | cut -f1)"
  } >"$DIR/READY"
  echo "arm_board: ready at $DIR ($(head -1 "$DIR/READY")); $(sed -n 2p "$DIR/READY")"
}

# parse --tracker/--key/--port/--host for server and start
parse_server_args() {
  TRACKER="" KEY="emulated-arm64" PORT=9290 HOST=127.0.0.1
  while [ $# -gt 0 ]; do
    case "$1" in
      --tracker) TRACKER=${2:-}; shift 2 ;;
      --key) KEY=${2:-}; shift 2 ;;
      --port) PORT=${2:-}; shift 2 ;;
      --host) HOST=${2:-}; shift 2 ;;
      *) die "unknown option $1 (server/start take --tracker HOST:PORT [--key KEY] [--port PORT] [--host HOST])" ;;
    esac
  done
  [ -n "$TRACKER" ] || die "--tracker HOST:PORT is required"
  case "$PORT" in ''|*[!0-9]*) die "--port must be a number, got '$PORT'" ;; esac
}

cmd_server() {
  parse_server_args "$@"
  local why
  why=$(missing)
  [ -z "$why" ] || die "$why"
  # --port-end PORT+10: the first free port of ten
  exec "$DIR/bin/python3" -m tvm.exec.rpc_server --host "$HOST" --port "$PORT" --port-end "$((PORT + 10))" \
    --tracker "$TRACKER" --key "$KEY"
}

cmd_start() {
  parse_server_args "$@"
  local why
  why=$(missing)
  [ -z "$why" ] || die "$why"
  mkdir -p "$DIR/run"
  setsid bash "$0" server --tracker "$TRACKER" --key "$KEY" --port "$PORT" --host "$HOST" >"$DIR/run/server.log" 2>&1 &
  echo $! >"$DIR/run/server.pid"
  echo "arm_board: emulated arm64 RPC server starting (pid $!, key $KEY, tracker $TRACKER; log $DIR/run/server.log)"
}

cmd_stop() {
  local pidfile="$DIR/run/server.pid" pid
  [ -f "$pidfile" ] || { echo "arm_board: no server started by this script"; return 0; }
  pid=$(cat "$pidfile")
  kill -- "-$pid" 2>/dev/null || kill "$pid" 2>/dev/null || true  # its own session: the forked workers too
  rm -f "$pidfile"
  echo "arm_board: stopped $pid"
}

case "${1:-}" in
  setup) shift; cmd_setup "$@" ;;
  check) why=$(missing); if [ -n "$why" ]; then echo "$why"; exit 1; fi; head -1 "$DIR/READY" ;;
  dir) echo "$DIR" ;;
  server) shift; cmd_server "$@" ;;
  start) shift; cmd_start "$@" ;;
  stop) shift; cmd_stop ;;
  *) sed -n '2,10p' "$0" | sed 's/^# \{0,1\}//'; [ -n "${1:-}" ] && exit 2 || exit 0 ;;
esac
