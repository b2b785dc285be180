#!/usr/bin/env bash
# System packages the book needs beyond Python: a C/C++ toolchain and cmake for llama.cpp
# (Ninja is optional, make works too) and Chromium for screenshots and browser tests.
set -euo pipefail
missing=()
command -v cmake >/dev/null 2>&1 || missing+=(cmake)
command -v ninja >/dev/null 2>&1 || missing+=(ninja-build)
command -v g++ >/dev/null 2>&1 || missing+=(g++)
command -v chromium >/dev/null 2>&1 || missing+=(chromium)
command -v npm >/dev/null 2>&1 || missing+=(nodejs npm)  # builds llama-server's web UI for the serving chapter
if ((${#missing[@]})); then
  if [[ $(id -u) -eq 0 ]] && command -v apt-get >/dev/null 2>&1; then
    echo "==> installing Debian packages: ${missing[*]}"
    apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
  else
    echo "note: ${missing[*]} not installed; the browser check and the chat-page screenshot will say so. Install with: sudo apt-get install ${missing[*]}"
  fi
fi
