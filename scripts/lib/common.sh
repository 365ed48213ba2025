# Shared by the project's scripts (sourced, not run).

ensure_swift_on_path() {
  command -v swift >/dev/null 2>&1 && return 0
  for d in /opt/swift/usr/bin /usr/share/swift/usr/bin; do
    [ -x "$d/swift" ] && export PATH="$d:$PATH" && return 0
  done
  echo "no Swift toolchain on PATH" >&2
  return 1
}

# Directory for caches that must survive a fresh clone (downloaded .debs, built images).
vmv_cache_dir() {
  local d=${VMV_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/vmv}
  mkdir -p "$d" && echo "$d"
}
