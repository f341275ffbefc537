#!/bin/sh
# PlatformIO downloads its "tool-scons" package on every build; offline, point it at SCons from PyPI instead
# (pip install platformio==6.2.0 scons==4.11.1 -- each PlatformIO release pins its own SCons version).
set -e
CORE="${PLATFORMIO_CORE_DIR:-$HOME/.platformio}"
P="$CORE/packages/tool-scons"
mkdir -p "$P"
printf '{"name": "tool-scons", "version": "4.41101.0", "description": "shim for PyPI scons"}\n' > "$P/package.json"
printf '{"type": "tool", "name": "tool-scons", "version": "4.41101.0", "spec": {"owner": "platformio", "id": null, "name": "tool-scons", "requirements": null, "uri": null}}\n' > "$P/.piopm"
printf 'import sys\nfrom SCons.Script.Main import main\nsys.exit(main())\n' > "$P/scons.py"
echo "tool-scons shim installed in $P"
