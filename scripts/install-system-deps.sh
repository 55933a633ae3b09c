#!/usr/bin/env bash
# Installs the Debian packages that the tests and the demo use as real peers:
# dcmtk (storescu, echoscu, findscu, storescp, dsrdump), dicom3tools (dciodvfy),
# dcm2niix, Orthanc with its DICOMweb plugin, Chromium for browser tests,
# iproute2 for the network namespaces that integration tests run in,
# mricron-data (the Colin27 brain), PostgreSQL (the scale-out catalog's tests run
# a private server on a Unix socket), and Tesseract OCR (the PHI leak test reads the
# text burned into pictures). Skips apt entirely when everything is there,
# so it is safe and fast to rerun.
set -euo pipefail

packages=(dcmtk dicom3tools dcm2niix orthanc orthanc-dicomweb chromium iproute2 mricron-data postgresql tesseract-ocr)

missing=()
for package in "${packages[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$package")
  fi
done

if [ ${#missing[@]} -eq 0 ]; then
  echo "system packages: all present"
  exit 0
fi

if [ "$(id -u)" -ne 0 ]; then
  sudo="sudo"
else
  sudo=""
fi

echo "system packages: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -qq
# Orthanc's package starts a system service on install; tests start their own
# Orthanc instead, so the packaged one is stopped right after (policy-rc.d keeps
# it from starting where invoke-rc.d honours it).
if [ ! -e /usr/sbin/policy-rc.d ] && [ -z "$sudo" ]; then
  printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d
  chmod +x /usr/sbin/policy-rc.d
  trap 'rm -f /usr/sbin/policy-rc.d' EXIT
fi
$sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
echo "system packages: done"
