#!/usr/bin/env bash
# Where the CPU PyTorch wheel of the dev extra comes from, as uv pip install arguments: a machine that
# carries it on disk (CI here: /opt/wheels) installs it from there, any other from PyTorch's CPU index.
if [ -d /opt/wheels ]; then
  echo "--find-links /opt/wheels"
else
  echo "--extra-index-url https://download.pytorch.org/whl/cpu --index-strategy unsafe-best-match"
fi
