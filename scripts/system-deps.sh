#!/usr/bin/env bash
# System packages the book needs beyond Python: a C/C++ toolchain and cmake for llama.cpp
# (Ninja is optional, make works too) and Chromium for screenshots and browser tests.
# Optional: ccache (a fallback build then recompiles only ggml's CPU back end, seconds instead
# of minutes) and qemu-user (the test that runs the build on an emulated older CPU).
set -euo pipefail
missing=()
command -v cmake >/dev/null 2>&1 || missing+=(cmake)
command -v ninja >/dev/null 2>&1 || missing+=(ninja-build)
command -v g++ >/dev/null 2>&1 || missing+=(g++)
command -v chromium >/dev/null 2>&1 || missing+=(chromium)
command -v npm >/dev/null 2>&1 || missing+=(nodejs npm)  # builds llama-server's web UI for the serving chapter
command -v ccache >/dev/null 2>&1 || missing+=(ccache)
command -v qemu-x86_64 >/dev/null 2>&1 || missing+=(qemu-user)
if ((${#missing[@]})); then
  if [[ $(id -u) -eq 0 ]] && command -v apt-get >/dev/null 2>&1; then
    echo "==> installing Debian packages: ${missing[*]}"
    apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
  else
    echo "note: ${missing[*]} not installed; the browser check and the chat-page screenshot will say so. Install with: sudo apt-get install ${missing[*]}"
  fi
fi
