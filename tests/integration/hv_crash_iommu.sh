#!/usr/bin/env bash
# integration.hv_crash with a guest IOMMU (iommu = true): see hv_crash.sh.
HV_CRASH_IOMMU=1 exec bash "$(dirname "$0")/hv_crash.sh"
