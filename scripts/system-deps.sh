#!/usr/bin/env bash
# Install the Debian packages that a target needs, only those missing. Usage: system-deps.sh test|bench|browser
set -euo pipefail
want=()
case "${1:-test}" in
  test) command -v initdb >/dev/null 2>&1 || ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || want+=(postgresql) ;;
  bench) command -v nmap >/dev/null || want+=(nmap); command -v rg >/dev/null || want+=(ripgrep)
         command -v yara >/dev/null || want+=(yara)
         ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || want+=(postgresql) ;;
  browser) command -v chromium >/dev/null || want+=(chromium) ;;
esac
if [ ${#want[@]} -gt 0 ]; then
  echo "installing Debian packages: ${want[*]}" >&2
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${want[@]}" >/dev/null
fi
